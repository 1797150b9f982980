from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import support

pytest_plugins = ["tests.servers"]

# google-cloud-storage 3.x clients fetch each bucket's metadata in a background thread (with a randomised retry
# backoff that outlives the test that made the client, and trips hypothesis's check on the global `random` in
# later tests). The tests' own clients do without; cloudprof's turn it off themselves (tests/storage/test_gcs.py).
os.environ.setdefault("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", "true")


@pytest.fixture(scope="session", autouse=True)
def _lazy_imports_before_servers():
    """Imported before any test (and any server thread) runs: hypothesis imports this at the first `st.from_regex`,
    under pytest's assertion rewriting (`ast.parse`), and CPython 3.11's ast module keeps one recursion counter for
    all threads (gh-106905; see tests/servers.py): a clean-clone CI run failed that import mid-session with
    "SystemError: AST constructor recursion depth mismatch"."""
    import hypothesis.strategies._internal.regex  # noqa: F401


@pytest.fixture(scope="session")
def testdata() -> Path:
    return support.testdata_dir()


@pytest.fixture(scope="session")
def go_bin() -> str:
    return support.go()


@pytest.fixture(autouse=True)
def _no_agent_left_running():
    """A test that starts the agent in this process must stop it: a SIGPROF timer left armed
    interrupts later tests at arbitrary bytecodes (seen as CPython SystemErrors in ast)."""
    import signal
    import sys

    yield
    lifecycle = sys.modules.get("cloudprof.agent.lifecycle")
    running = lifecycle is not None and lifecycle.current() is not None
    armed = signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0)
    if running:
        lifecycle.stop(flush=False, timeout=1)
    if armed:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
    assert not (running or armed), f"the test left {'the agent running' if running else 'ITIMER_PROF armed'}"
