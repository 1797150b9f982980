from __future__ import annotations

import os

import pytest


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No CLOUDPROF_* from the outside and no stray pyproject/cloudprof.toml: each test sets what it means."""
    for name in list(os.environ):
        if name.upper().startswith("CLOUDPROF_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield
    import cloudprof

    cloudprof.stop(flush=False, timeout=1)
