"""Reading what the agent uploaded: raw profiles by key, stacks with labels, comments."""

from __future__ import annotations

import socket
import time
from pathlib import Path

from cloudprof.pprof import Profile, decode, strings
from cloudprof.storage.keys import RawKey


def raw_profiles(root: Path) -> list[tuple[RawKey, Profile]]:
    out = []
    for path in sorted(Path(root).rglob("*.pb.gz")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith("raw/"):
            out.append((RawKey.parse(rel), decode(path.read_bytes())))
    return out


def samples(profile: Profile) -> list[tuple[list[str], dict[str, str], list[int]]]:
    """(function names leaf first, labels, values [samples, cpu ns, wall ns]) per sample."""
    table = strings(profile)
    names = {f.id: table[f.name] for f in profile.function}
    locs = {loc.id: names[loc.line[0].function_id] for loc in profile.location}
    return [([locs[i] for i in s.location_id], {table[lab.key]: table[lab.str] for lab in s.label}, list(s.value))
            for s in profile.sample]


def comments(profile: Profile) -> dict[str, str]:
    table = strings(profile)
    return dict(table[i].split("=", 1) for i in profile.comment if "=" in table[i])


def total(profile: Profile, index: int, *, function: str | None = None, leaf: str | None = None,
          label: tuple[str, str] | None = None) -> int:
    """Sum of value `index` over samples whose stack contains `function` / whose leaf is `leaf` / with `label`."""
    out = 0
    for names, labels, values in samples(profile):
        if function is not None and not any(n == function or n.endswith("." + function) for n in names):
            continue
        if leaf is not None and names[0] != leaf:
            continue
        if label is not None and labels.get(label[0]) != label[1]:
            continue
        out += values[index]
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on 127.0.0.1:{port}")
