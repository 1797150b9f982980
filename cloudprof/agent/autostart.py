"""Zero-code start: `cloudprof run -- CMD ...` runs CMD with a sitecustomize that starts the agent.

The parent validates the settings strictly (a bad one fails the command before
CMD runs), then replaces itself with CMD, so exit codes and signals are CMD's.
Each Python process CMD starts (same environment) profiles itself under its own pid.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Sequence

from cloudprof.agent.lifecycle import start
from cloudprof.config import load_settings, run_environment
from cloudprof.errors import ConfigError

__all__ = ["BOOTSTRAP_DIR", "autostart", "run"]

BOOTSTRAP_DIR = Path(__file__).resolve().with_name("bootstrap")


def autostart() -> bool:
    """Called by the bootstrap sitecustomize: start as the environment says (never raises)."""
    return start()


def run(cmd: Sequence[str], *, service: str | None = None, storage: str | None = None) -> int:
    """Exec `cmd` profiled; returns only on failure (exit status for the CLI)."""
    cmd = list(cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise ConfigError("nothing to run: cloudprof run [--service S] [--storage URL] -- CMD ...")
    overrides = {"enabled": True}
    if service:
        overrides["service"] = service
    if storage:
        overrides["storage"] = storage
    settings = load_settings(overrides)  # raises ConfigError naming the setting
    store = settings.storage
    if store.startswith("file://") and not os.path.isabs(store[len("file://"):]):
        store = "file://" + os.path.abspath(store[len("file://"):])
    env = run_environment(BOOTSTRAP_DIR, {"enabled": "true", "service": settings.service, "storage": store})
    program = shutil.which(cmd[0], path=env.get("PATH")) or cmd[0]
    try:
        os.execve(program, cmd, env)
    except OSError as exc:
        raise ConfigError(f"cannot run {cmd[0]!r}: {exc.strerror or exc}") from None
    return 1  # unreachable
