"""`go tool pprof` as an oracle: run it and parse what it prints."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

_VALUES = re.compile(r"^\s*(-?\d+(?:\s+-?\d+)*):(\s|$)")
_TOP = re.compile(r"^\s*(-?[\d.]+)\S*\s+\S+%\s+\S+%\s+(-?[\d.]+)\S*\s+\S+%\s+(.*?)(?: \(inline\))?$")


def run(go_bin: str, *args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PPROF_BINARY_PATH="/nonexistent", PPROF_TMPDIR=str(cwd or "/tmp"))
    out = subprocess.run([go_bin, "tool", "pprof", "-symbolize=none", *args], capture_output=True, text=True,
                         errors="replace", timeout=300, cwd=cwd, env=env)
    if check and (out.returncode != 0 or "failed to fetch" in out.stderr or "parsing profile" in out.stderr):
        raise AssertionError(f"go tool pprof {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    return out


def reads(go_bin: str, path: Path) -> tuple[bool, str]:
    """Whether go tool pprof accepts the file, and what it said."""
    out = run(go_bin, "-raw", str(path), check=False)
    failed = out.returncode != 0 or "failed to fetch" in out.stderr or "parsing profile" in out.stderr
    return not failed, out.stderr


def raw_totals(go_bin: str, path: Path) -> dict[str, int]:
    """Sum of each sample type over the samples `go tool pprof -raw` lists."""
    lines = run(go_bin, "-raw", str(path)).stdout.splitlines()
    start = lines.index("Samples:")
    types = [t.removesuffix("[dflt]") for t in lines[start + 1].split()]
    sums = [0] * len(types)
    for line in lines[start + 2:]:
        if line.startswith(("Locations", "Mappings")):
            break
        match = _VALUES.match(line)
        if match:
            for i, v in enumerate(match.group(1).split()):
                sums[i] += int(v)
    totals: dict[str, int] = {}
    for t, v in zip(types, sums):
        totals[t] = totals.get(t, 0) + v
    return totals


def merged(go_bin: str, paths: list[Path], out: Path) -> Path:
    run(go_bin, "-proto", "-output", str(out), *map(str, paths))
    return out


def top(go_bin: str, path: Path, sample_index: str, unit: str) -> dict[str, tuple[float, float]]:
    """{function name: (flat, cum)} from `go tool pprof -top`, every node, values in `unit`."""
    out = run(go_bin, "-top", "-nodecount=1000000", "-nodefraction=0", "-edgefraction=0",
              f"-sample_index={sample_index}", f"-unit={unit}", str(path)).stdout.splitlines()
    header = next(i for i, line in enumerate(out) if line.split()[:2] == ["flat", "flat%"])
    result = {}
    for line in out[header + 1:]:
        match = _TOP.match(line)
        assert match, f"unexpected -top line: {line!r}"
        flat, cum, name = float(match.group(1)), float(match.group(2)), match.group(3)
        old = result.get(name, (0.0, 0.0))
        result[name] = (old[0] + flat, max(old[1], cum))
    return result
