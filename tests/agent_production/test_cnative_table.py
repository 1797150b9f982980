"""The C-call table, in small: our <native> leaf against py-spy --native on two C-heavy programs."""

from __future__ import annotations

import importlib.util
import os
import shutil

import pytest

from cloudprof.agent import native
from tests.support import REPO

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not native.SUPPORTED, reason="CPython 3.11 bytecode")]


def _run_module():
    spec = importlib.util.spec_from_file_location("cnative_run", REPO / "benchmarks" / "cnative" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("program", ["zlib_compress", "list_remove"])
def test_native_leaf_matches_py_spy(program, tmp_path):
    run = _run_module()
    if os.geteuid() != 0 or not (shutil.which("py-spy") or os.path.exists(run.PY_SPY)):
        pytest.skip("py-spy must run as root to read another process's memory")
    result = run.run_once(program, 1.5, tmp_path, "agent")
    assert result["spy_samples"] > 50, result
    assert result["ours"] >= 0.8, result
    assert abs(result["ours"] - result["truth"]) < 0.15, result
    assert result["other"] < 0.1, result
