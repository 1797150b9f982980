#!/usr/bin/env bash
# Build the aggregator's Cloud Functions source (one zip) from this repository:
# main.py re-exporting cloudprof.aggregator.handlers.gcp.handler, the cloudprof
# package itself, and a requirements.txt that Cloud Build installs.
#
#   terraform/gcp/build_function.sh [-o dist/cloudprof-aggregator-gcf.zip]
#
# Then pass the zip as the module's function_package.
set -euo pipefail

repo="$(cd "$(dirname "$0")/../.." && pwd)"
out="$repo/dist/cloudprof-aggregator-gcf.zip"
python="${PYTHON:-python3}"

while [ $# -gt 0 ]; do
  case "$1" in
    -o|--output) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "build_function.sh: unknown argument $1" >&2; exit 2 ;;
  esac
done

mkdir -p "$(dirname "$out")"
"$python" - "$repo" "$out" <<'PY'
import os, sys, tomllib, zipfile

repo, out = sys.argv[1], sys.argv[2]
with open(os.path.join(repo, "pyproject.toml"), "rb") as f:
    project = tomllib.load(f)["project"]
# The runtime needs the core dependencies, the gcs extra and the Functions Framework.
requirements = [*project["dependencies"], *project["optional-dependencies"]["gcs"], "functions-framework>=3.5"]

main_py = '''"""Cloud Functions entry point: the function's entry_point "handler" is cloudprof's GCP aggregator handler."""

from cloudprof.aggregator.handlers.gcp import handler

__all__ = ["handler"]
'''

files = {"main.py": main_py.encode(), "requirements.txt": ("\n".join(requirements) + "\n").encode()}
for folder, dirs, names in os.walk(os.path.join(repo, "cloudprof")):
    dirs[:] = sorted(d for d in dirs if d != "__pycache__")
    for name in names:
        if name.endswith((".pyc", ".pyo")):
            continue
        path = os.path.join(folder, name)
        with open(path, "rb") as f:
            files[os.path.relpath(path, repo)] = f.read()

# Deterministic (sorted names, fixed times) so the object name, a checksum, only moves when code does.
with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
    for name in sorted(files):
        info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
        info.external_attr = 0o644 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        zf.writestr(info, files[name])
PY
echo "$out"
