"""The import arrows of DESIGN, and honest `__all__`s, kept true by a test."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
import textwrap

import pytest

from tests.support import REPO

PACKAGE = REPO / "cloudprof"

# What each part may import from cloudprof (besides itself). Leaves first.
ALLOWED = {
    "errors": set(),
    "times": {"errors"},
    "pprof": {"errors"},
    "storage": {"errors", "times"},
    "config": {"errors", "storage"},
    "agent": {"errors", "times", "pprof", "storage", "config"},
    "aggregator": {"errors", "times", "pprof", "storage", "config"},
    "query": {"errors", "times", "pprof", "storage", "aggregator"},
    "render": {"errors", "times", "pprof", "query"},
    "cli": {"errors", "times", "pprof", "storage", "config", "agent", "aggregator", "query", "render", "demo"},
    "demo": {"errors", "times", "pprof", "storage", "config", "agent", "aggregator", "query", "render"},
    "__main__": {"cli"},
    "__init__": {"agent", "config", "errors"},
}
# `from cloudprof import __version__` is fine above the leaves (the root package imports the agent).
for _part_name in ("agent", "aggregator", "query", "render", "cli", "demo"):
    ALLOWED[_part_name].add("__init__")
# Third-party packages allowed outside the cloud SDK modules.
THIRD_PARTY_CORE = {"google.protobuf", "pydantic", "pydantic_settings"}
CLOUD_SDKS = ("boto3", "botocore", "google.cloud", "google.api_core", "google.auth")
SDK_MODULES = {"storage/s3.py", "storage/gcs.py"}
SDK_FOLDERS = ("aggregator/handlers/",)


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel.endswith("_pb2.py"):
            continue
        yield rel, ast.parse(path.read_text(), filename=str(path))


def _imports(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def _part(rel: str) -> str:
    head = rel.split("/")[0]
    return head[:-3] if head.endswith(".py") else head


@pytest.mark.parametrize("rel,tree", list(_modules()), ids=lambda v: v if isinstance(v, str) else "")
def test_imports_follow_the_arrows(rel, tree):
    part = _part(rel)
    allowed = ALLOWED[part] | {part}
    sdk_ok = rel in SDK_MODULES or rel.startswith(SDK_FOLDERS)
    for name in _imports(tree):
        if name.startswith("cloudprof"):
            target = name.split(".")[1] if "." in name else "__init__"
            assert target in allowed, f"cloudprof/{rel} imports {name}: {part} may only use {sorted(allowed)}"
        elif name.startswith(CLOUD_SDKS):
            assert sdk_ok, f"cloudprof/{rel} imports the cloud SDK {name}; only storage/s3.py, storage/gcs.py, handlers may"
        elif part == "pprof":
            top = name.split(".")[0]
            assert top in sys.stdlib_module_names or name.startswith("google.protobuf"), (
                f"cloudprof/{rel} imports {name}: the profile model imports only the standard library and protobuf"
            )


PUBLIC_PACKAGES = ["cloudprof", "cloudprof.errors", "cloudprof.pprof", "cloudprof.storage", "cloudprof.agent",
                   "cloudprof.aggregator", "cloudprof.query", "cloudprof.render"]


@pytest.mark.parametrize("name", PUBLIC_PACKAGES)
def test_all_is_sorted_and_complete(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert list(exported) == sorted(exported, key=str.casefold) or list(exported) == sorted(exported), f"{name}.__all__ is not sorted"
    assert len(set(exported)) == len(exported), f"{name}.__all__ repeats a name"
    for attr in exported:
        assert hasattr(module, attr), f"{name}.__all__ names {attr}, which it does not define"
    public = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and not isinstance(value, type(sys)) and getattr(value, "__module__", name).startswith(name)
        and not getattr(value, "__module__", "").startswith("typing")
    }
    missing = public - set(exported) - {"annotations"}
    assert not missing, f"{name} defines public names missing from __all__: {sorted(missing)}"


def test_agent_runs_without_cloud_sdks(tmp_path):
    """Importing and running the agent needs only protobuf and pydantic."""
    script = textwrap.dedent(
        f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("boto3", "botocore", "requests") or name.startswith(("google.cloud", "google.auth", "google.api_core")):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        import cloudprof
        cloudprof.start(enabled=True, service="lightweight", storage="file://{tmp_path}/store", strict=True)
        sum(i * i for i in range(200000))
        cloudprof.stop(flush=True, timeout=5)
        heavy = [m for m in sys.modules if m.split(".")[0] in ("boto3", "botocore")]
        assert not heavy, heavy
        print("ok")
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr
    assert list((tmp_path / "store").rglob("*.pb.gz")), "the agent wrote no profile"
