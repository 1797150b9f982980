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
