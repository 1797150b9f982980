"""The C-call table: how much CPU our `<native>` leaf names right, against py-spy --native, per C-heavy program.

Each program runs under `py-spy record --native -r 100 -f raw` while our agent (cloudprof.start, default;
or with --sampler signal a bare CPU-time signal handler calling the same naming function) samples it in
the same process. Our shares are CPU-time weighted (wall for time.sleep), as in the agent's profiles.
Truth: the share of py-spy samples whose innermost Python frame is the program's C-call line (marked
`# <- callee`) with native frames under it; for callees inside libpython, which py-spy folds into the
Python frame, the share of py-spy samples at that line. Ours: the share of our samples at that line whose leaf is
`<native> <expected callee>`. "other native" is the share our sampler gave to any other `<native>` leaf.

    sudo .venv/bin/python benchmarks/cnative/run.py [--seconds 3] [--runs 3] [--sampler agent|signal] [program ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
PY_SPY = str(Path(sys.executable).with_name("py-spy"))

# program -> the leaf our agent should show for its C call
EXPECTED = {
    "pickle_dumps": "<native> _pickle.dumps",
    "zlib_compress": "<native> zlib.compress",
    "hashlib_update": "<native> _hashlib.HASH.update",
    "str_concat": "<native> str +=",
    "list_remove": "<native> list.remove",
    "time_sleep": "<native> time.sleep",
    "sorted_strings": "<native> sorted",
    "regex_sub": "<native> re.Pattern.sub",
    "json_encode": "<native> _json.Encoder.__call__",
    "list_append_loop": "<native> list.append",
}
# Callees compiled into libpython: py-spy folds those C frames into the Python frame, so its truth for them
# is "samples at the call line" (an upper bound: it includes that line's own bytecode).
IN_LIBPYTHON = {"list_remove", "sorted_strings"}
# Our harness's own frames (signal handler, wall sampler thread): not part of the program.
HARNESS = re.compile(r"^(?:[\w.<>]*\.)?(record|<lambda>|sample_loop|line_at) \(.*_harness\.py:\d+\)$")
PY_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.+\.py):(?P<line>\d+)\)$")


def call_line(program: str) -> tuple[str, int]:
    """(file, line) of the program's C call: the `# <- callee` line, or MARK = (file, text) for stdlib calls."""
    path = HERE / "programs" / f"{program}.py"
    text = path.read_text()
    mark = re.search(r"^MARK = .*$", text, re.M)
    if mark:
        namespace: dict = {}
        exec(compile(text, str(path), "exec"), namespace)  # noqa: S102 - our own benchmark program
        target_file, needle = namespace["MARK"]
        lines = Path(target_file).read_text().splitlines()
        return str(Path(target_file).resolve()), next(i for i, l in enumerate(lines, 1) if needle in l)
    line = next(i for i, l in enumerate(text.splitlines(), 1) if "# <- callee" in l)
    return str(path.resolve()), line


def truth_share(raw: str, target: tuple[str, int]) -> tuple[float, float, int, Counter]:
    """py-spy shares: native code under the target line, anything at the line; samples; top native symbols."""
    total = native = at_line = 0
    symbols: Counter = Counter()
    for row in raw.splitlines():
        stack, _, count = row.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        if "_harness.py" not in stack or "cloudprof/" in stack or any(HARNESS.match(f) for f in frames):
            continue  # other threads, and our sampler's own handler (the agent does not sample itself)
        if "exec_module" in stack or "_find_and_load" in stack:
            continue  # the program's import (building its data) runs before our sampling starts
        last_py = max((i for i, f in enumerate(frames) if PY_FRAME.match(f)), default=None)
        if last_py is None:
            continue
        total += n
        m = PY_FRAME.match(frames[last_py])
        tail = frames[last_py + 1:]
        if _same_file(m["file"], target[0]) and int(m["line"]) == target[1]:
            at_line += n
            if tail:
                native += n
                symbols[_symbol(tail[0])] += n
    return (native / total if total else 0.0), (at_line / total if total else 0.0), total, symbols


def _same_file(a: str, b: str) -> bool:
    return Path(a).name == Path(b).name


def _symbol(frame: str) -> str:
    return frame.split(" (")[0]


def ours_share(result: dict, target: tuple[str, int], expected: str) -> tuple[float, float, int, Counter]:
    total = right = other = 0
    leaves: Counter = Counter()
    for filename, line, leaf, n in result["samples"]:
        total += n
        if leaf:
            leaves[leaf] += n
        if leaf == expected and _same_file(filename, target[0]) and line == target[1]:
            right += n
        elif leaf:
            other += n
    return (right / total if total else 0.0), (other / total if total else 0.0), total, leaves


def run_once(program: str, seconds: float, workdir: Path, sampler: str = "agent") -> dict:
    raw_path, ours_path = workdir / f"{program}.raw", workdir / f"{program}.json"
    wall = "WALL = True" in (HERE / "programs" / f"{program}.py").read_text()
    cmd = [PY_SPY, "record", "--native", "-r", "100", "-f", "raw", "-o", str(raw_path)]
    if wall:
        cmd.append("--idle")
    cmd += ["--", PYTHON, str(HERE / "_harness.py"), program, str(seconds), str(ours_path), sampler]
    subprocess.run(cmd, check=True, capture_output=True, timeout=seconds * 10 + 60)
    target = call_line(program)
    native, at_line, spy_total, symbols = truth_share(raw_path.read_text(), target)
    right, other, our_total, leaves = ours_share(json.loads(ours_path.read_text()), target, EXPECTED[program])
    truth = at_line if program in IN_LIBPYTHON else native
    return {"program": program, "truth": truth, "spy_native": native, "spy_line": at_line, "ours": right, "other": other, "spy_samples": spy_total,
            "our_samples": our_total, "symbols": symbols.most_common(2), "leaves": leaves.most_common(3)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("programs", nargs="*", default=list(EXPECTED))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--sampler", choices=("agent", "signal"), default="agent")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", help="also write the per-run results here")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("py-spy needs root to read another process's memory here", file=sys.stderr)
    rows, everything = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for program in args.programs:
            runs = [run_once(program, args.seconds, Path(tmp), args.sampler) for _ in range(args.runs)]
            everything += runs
            med = {k: statistics.median(r[k] for r in runs) for k in ("truth", "spy_native", "spy_line", "ours", "other")}
            rows.append((program, EXPECTED[program], med, runs[-1]))
            print(f"  {program}: py-spy {med['truth']:.0%} ours {med['ours']:.0%} "
                  f"({runs[-1]['symbols']}; ours {runs[-1]['leaves']})", file=sys.stderr)
    print(f"\nC-call naming ({args.sampler}), median of {args.runs} runs x {args.seconds:g}s at 100 Hz "
          "(CPU; wall for time.sleep)\n")
    print("| program | our leaf | py-spy: C frames under the call line | py-spy: at the call line | truth used "
          "| ours: named right | diff | ours: other <native> leaves |")
    print("|---|---|---|---|---|---|---|---|")
    for program, expected, med, last in rows:
        used = "at line (libpython)" if program in IN_LIBPYTHON else "C frames"
        print(f"| {program} | `{expected}` | {med['spy_native']:.1%} | {med['spy_line']:.1%} | {used} | "
              f"{med['ours']:.1%} | {(med['ours'] - med['truth']) * 100:+.1f} pt | {med['other']:.1%} |")
    if args.json:
        Path(args.json).write_text(json.dumps(everything, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
