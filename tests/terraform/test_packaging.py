"""The packages the modules deploy: the Lambda zip imports its handler, and the Cloud
Functions source runs under the Functions Framework as both deployed functions."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from datetime import timedelta
from pathlib import Path

from tests.terraform import tf
from tests.terraform.test_consistency import gcp_scheduler_body



def _build(script: Path, out: Path, **env: str) -> Path:
    result = subprocess.run(
        ["bash", str(script), "-o", str(out)],
        env={**os.environ, "PYTHON": sys.executable, **env}, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith(str(out))
    return out


def _extract(archive: Path, where: Path) -> Path:
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(where)
    return where


def _run_from(folder: Path, code: str, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """Python with `folder` first on sys.path (as the platform does), the test venv's packages after it."""
    return subprocess.run([sys.executable, "-c", code, *args], cwd=folder, env={**os.environ, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def _snapshot(tmp_path: Path) -> Path:
    """The files build_lambda.sh reads, frozen: the shared working tree may change between two builds."""
    root = tmp_path / "repo"
    for item in ("pyproject.toml", "README.md", "cloudprof", "advisors", "terraform/aws/build_lambda.sh"):
        source = tf.REPO / item
        if source.is_dir():
            shutil.copytree(source, root / item, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            (root / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, root / item)
    return root


def test_lambda_package_imports_its_handler_from_the_zip(tmp_path):
    script = _snapshot(tmp_path) / "terraform" / "aws" / "build_lambda.sh"
    archive = _build(script, tmp_path / "lambda.zip", CLOUDPROF_LAMBDA_NO_DEPS="1")
    names = zipfile.ZipFile(archive).namelist()
    assert "cloudprof/aggregator/handlers/aws_lambda.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    # Deterministic, so source_code_hash moves only with the code.
    again = _build(script, tmp_path / "again.zip", CLOUDPROF_LAMBDA_NO_DEPS="1")
    assert hashlib.sha256(archive.read_bytes()).digest() == hashlib.sha256(again.read_bytes()).digest()
    folder = _extract(archive, tmp_path / "task")
    handler = tf.unquote(tf.locals_of(tf.AWS)["handler"])
    module, _, name = handler.rpartition(".")
    code = (
        "import importlib, os, sys, cloudprof\n"
        "assert cloudprof.__file__.startswith(os.getcwd()), cloudprof.__file__\n"
        f"fn = getattr(importlib.import_module({module!r}), {name!r})\n"
        "assert callable(fn)\n"
        "print('ok')\n"
    )
    result = _run_from(folder, code)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-3000:]


def test_lambda_build_defaults_match_the_module_defaults():
    script = (tf.AWS / "build_lambda.sh").read_text()
    py_version = re.search(r'^py_version="([\d.]+)"', script, re.M).group(1)
    arch = re.search(r'^arch="(\w+)"', script, re.M).group(1)
    variables = {name: tf.unquote(body.get("default")) for _, name, body in tf.named_blocks(tf.AWS, "variable")}
    assert variables["lambda_runtime"] == f"python{py_version}"
    assert variables["lambda_architecture"] == arch


def test_gcp_requirements_follow_pyproject(tmp_path):
    import tomllib

    archive = _build(tf.GCP / "build_function.sh", tmp_path / "gcf.zip")
    with zipfile.ZipFile(archive) as zf:
        requirements = zf.read("requirements.txt").decode().split()
        names = zf.namelist()
    project = tomllib.loads((tf.TERRAFORM.parent / "pyproject.toml").read_text())["project"]
    for requirement in [*project["dependencies"], *project["optional-dependencies"]["gcs"]]:
        assert requirement in requirements
    assert any(r.startswith("functions-framework") for r in requirements)
    assert {"main.py", "cloudprof/aggregator/handlers/gcp.py"} <= set(names)


_FUNCTIONS = r"""
import json, os, sys
import cloudprof
assert cloudprof.__file__.startswith(os.getcwd()), cloudprof.__file__
import functions_framework

spec = json.loads(sys.argv[1])
# The object-finalize function: Eventarc posts a CloudEvent in binary mode.
app = functions_framework.create_app(target=spec["entry_point"], source="main.py", signature_type="cloudevent")
r = app.test_client().post("/", headers=spec["ce_headers"], data=json.dumps(spec["data"]))
event = [r.status_code, r.get_data(as_text=True)]
# The pending function: Cloud Scheduler posts the job's body.
app = functions_framework.create_app(target=spec["entry_point"], source="main.py", signature_type="http")
r = app.test_client().post("/", headers=spec["http_headers"], data=spec["body"])
print(json.dumps({"event": event, "http": [r.status_code, r.get_data(as_text=True)]}))
"""


def test_gcp_source_serves_both_functions_under_the_functions_framework(tmp_path, fake_gcs):
    from cloudprof.aggregator import Partition
    from cloudprof.storage import open_store
    from tests.aggregator import rawgen

    bucket = fake_gcs.new_bucket("tf")
    url = f"gs://{bucket}"
    store = open_store(url)
    first_hour = rawgen.put_many(store, 3, stacks=5)
    second_hour = rawgen.put_many(store, 2, hour=rawgen.HOUR + timedelta(hours=1), stacks=5)
    key = first_hour[0].key

    folder = _extract(_build(tf.GCP / "build_function.sh", tmp_path / "gcf.zip"), tmp_path / "source")
    spec = {
        "entry_point": tf.unquote(tf.locals_of(tf.GCP)["entry_point"]),
        "ce_headers": {
            "ce-id": "9370394312961127", "ce-specversion": "1.0",
            "ce-source": f"//storage.googleapis.com/projects/_/buckets/{bucket}",
            "ce-type": "google.cloud.storage.object.v1.finalized", "ce-subject": f"objects/{key}",
            "ce-time": "2026-11-25T14:01:02.345678Z", "Content-Type": "application/json",
        },
        "data": {"kind": "storage#object", "bucket": bucket, "name": key, "generation": "1", "size": str(len(first_hour[0].data))},
        "http_headers": {
            "Content-Type": "application/json", "User-Agent": "Google-Cloud-Scheduler",
            "X-CloudScheduler": "true", "X-CloudScheduler-ScheduleTime": "2026-11-25T16:20:00.000Z",
        },
        "body": gcp_scheduler_body(3).decode(),
    }
    env = {"CLOUDPROF_STORAGE": url}
    result = _run_from(folder, _FUNCTIONS, json.dumps(spec), env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert outcome["event"][0] == 200, outcome
    assert outcome["http"][0] == 200, outcome
    for uploads in (first_hour, second_hour):
        part = Partition("checkout", rawgen.HOUR if uploads is first_hour else rawgen.HOUR + timedelta(hours=1), "cpu")
        manifest = json.loads(store.get(part.manifest_key))
        listed = json.dumps(manifest)
        assert all(u.key.rsplit("/", 1)[-1] in listed for u in uploads), manifest
        store.head(part.merged_key)
