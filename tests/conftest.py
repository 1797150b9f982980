from __future__ import annotations

from pathlib import Path

import pytest

from tests import support

pytest_plugins = ["tests.servers"]


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
