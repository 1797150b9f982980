#!/usr/bin/env bash
# Build the aggregator Lambda package (one zip) from this repository: cloudprof[s3]
# with its dependencies for the Lambda runtime's Python and architecture.
#
#   terraform/aws/build_lambda.sh [-o dist/cloudprof-aggregator-lambda.zip] [--python 3.12] [--arch arm64|x86_64]
#
# Then pass the zip as the module's lambda_package. boto3 is bundled rather than
# taken from the runtime because the aggregator's conditional writes
# (If-Match / If-None-Match on PutObject) need a newer botocore than some runtimes ship.
# CLOUDPROF_LAMBDA_NO_DEPS=1 packages cloudprof alone (for offline tests of the layout).
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/dist/cloudprof-aggregator-lambda.zip"
py_version="3.12"
arch="arm64"
python="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
  case "$1" in
    -o|--output) out="$2"; shift 2 ;;
    --python) py_version="$2"; shift 2 ;;
    --arch) arch="$2"; shift 2 ;;
    -h|--help) sed -n '2,10p' "$0"; exit 0 ;;
    *) echo "build_lambda.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

case "$arch" in
  arm64) platform="manylinux2014_aarch64" ;;
  x86_64) platform="manylinux2014_x86_64" ;;
  *) echo "build_lambda.sh: --arch must be arm64 or x86_64, not $arch" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Build from a copy so that setuptools' build/ never lands in the working tree.
mkdir -p "$work/src"
for item in pyproject.toml README.md cloudprof advisors; do
  if [ -e "$repo/$item" ]; then cp -R "$repo/$item" "$work/src/"; fi
done
find "$work/src" -name __pycache__ -prune -exec rm -rf {} +
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$work/wheel" "$work/src"
wheel="$(ls "$work"/wheel/cloudprof-*.whl)"

if [ "${CLOUDPROF_LAMBDA_NO_DEPS:-}" = "1" ]; then
  "$python" -m pip install -q --no-deps --no-compile --target "$work/package" "$wheel"
else
  # Binary wheels for the target, whatever machine builds the package.
  "$python" -m pip install -q --no-compile --target "$work/package" \
    --platform "$platform" --implementation cp --python-version "$py_version" --only-binary=:all: \
    "${wheel}[s3]"
fi

mkdir -p "$(dirname "$out")"
# A deterministic zip (sorted names, fixed times) so source_code_hash only moves when code does.
"$python" - "$work/package" "$out" <<'PY'
import os, sys, zipfile
root, out = sys.argv[1], sys.argv[2]
names = []
for folder, dirs, files in os.walk(root):
    dirs[:] = [d for d in dirs if d != "__pycache__"]
    # pip's direct_url.json names the temporary wheel path: drop it (and its RECORD line).
    names += [os.path.join(folder, f) for f in files if not f.endswith(".pyc") and f != "direct_url.json"]
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for path in sorted(names):
        info = zipfile.ZipInfo(os.path.relpath(path, root), date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".dist-info/RECORD"):
            data = b"".join(l for l in data.splitlines(keepends=True) if b"/direct_url.json," not in l)
        zf.writestr(info, data)
PY
echo "$out"
