"""What tests share: where the third-party corpus is, and tools CI installs.

A test that needs a tool `.ci/run` installs fails (never skips) under CI=true
when the tool is missing; elsewhere it skips with the reason.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() == "true"
ARTIFACTS = REPO / "test-artifacts"


def missing(reason: str) -> None:
    """Fail under CI, skip elsewhere."""
    if IN_CI:
        pytest.fail(f"{reason} (required under CI=true)", pytrace=False)
    pytest.skip(reason)


def testdata_dir() -> Path:
    """../shared/testdata, or $CLOUDPROF_TESTDATA."""
    candidates = [os.environ.get("CLOUDPROF_TESTDATA"), REPO.parent / "shared" / "testdata"]
    for candidate in candidates:
        if candidate and Path(candidate, "pprof").is_dir():
            return Path(candidate)
    missing("third-party corpus not found at ../shared/testdata (set CLOUDPROF_TESTDATA)")
    raise AssertionError("unreachable")


def tool(name: str, *fallbacks: str) -> str:
    """Absolute path of a command-line tool that .ci/run installs."""
    for candidate in (name, *fallbacks):
        found = shutil.which(candidate)
        if found:
            return found
    missing(f"{name} is not installed (.ci/run installs it)")
    raise AssertionError("unreachable")


def go() -> str:
    return tool("go", "/usr/lib/go/bin/go")


def chromium() -> str:
    return tool("chromium", "chromium-browser", "/usr/bin/chromium")


def artifact_path(name: str) -> Path:
    """A file a test leaves behind for people to look at (screenshots, pages)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS / name
