"""Our agent against py-spy, on the same run: per-function self and total CPU shares side by side.

    .venv/bin/python benchmarks/accuracy/compare.py [PROGRAM.py ...] [--threshold 5] [--min-samples 2000] [--runs N]
                                                    [--no-timers]

Each program runs under `py-spy record -r 100 -f raw` (out of process,
reads memory without the GIL: the reference) with our agent started inside it
by the `cloudprof run` bootstrap (CLOUDPROF_* settings, default budget). Only
stacks that pass through the program's own file count (interpreter and agent
start-up are not the program); py-spy samples whose leaf is inside cloudprof
(our signal handler, our threads) are reported as the agent's share and left out.
Functions are matched by qualified name and file name; rows where either side
gives at least 2% are printed, and differences over the threshold are flagged.

Precision: a share read from n samples has a standard error of up to
50/sqrt(n) points, and a difference of two such shares about 71/sqrt(n): with
the ~200-600 samples of one run that is 3-5 points, as large as the tolerance.
So runs of a program are repeated and pooled until py-spy has at least
--min-samples (2,000) samples in it (every program, same rule; at most
--max-runs): about 1.6 points of standard error for a difference at a 50% share,
so the 5-point tolerance is 3 standard errors. Our agent often has fewer
samples: it samples per second of CPU where py-spy samples per second in which
the thread is runnable (a busy machine), and the expiries that fall during one
long GIL-holding C call make one weighted sample (p3's sorts: ~400 against
~2,000). Each program's header prints the binomial figure for its two sample
counts (a rough guide where samples are weighted). --runs N instead runs every program exactly
N times. All 10 programs take about 5 minutes on 2 cores. --no-timers runs the agent with
`thread_cpu_timers=false` (other threads' CPU from the sampler thread's ticks), to see the GIL
bias that the per-thread CPU timers remove (p10).

The threaded programs (p9, p10) also time their own parts on their threads' CPU clocks
(`_truth.py`, a file named by ACCURACY_TRUTH): exact, so they get a "total truth" column with
py-spy's and our difference from it, and are judged (flagged) against it. There py-spy is the
one off, by up to 10 points on p10 (it samples on the wall clock, not on the threads' CPU clocks).

A function with no check point of its own (no loop, no call: p3's
`lambda row: (row[1], row[2])` sort key) used to get no self time from us (py-spy:
2-4% in p3): the Python handler runs at its next entry, charged to the caller. The
C handler's copy of the main thread's frames at the signal places it now.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from cloudprof.agent.autostart import BOOTSTRAP_DIR
from cloudprof.pprof import decode, strings

FRAME = re.compile(r"^(?P<name>.*) \((?P<file>.*):(?P<line>\d+)\)$")


def py_spy_stacks(path: Path):
    """(frames root-first as (name, file), count)."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        frames = []
        for raw in stack.split(";"):
            m = FRAME.match(raw)
            frames.append((m["name"], os.path.basename(m["file"])) if m else (raw, ""))
        yield frames, int(count)


def our_stacks(store: Path):
    for path in sorted(store.rglob("*.pb.gz")):
        p = decode(path.read_bytes())
        table = strings(p)
        cpu = [table[st.type] for st in p.sample_type].index("cpu")
        functions = {f.id: (table[f.name], os.path.basename(table[f.filename])) for f in p.function}
        locations = {loc.id: functions[loc.line[0].function_id] for loc in p.location}
        count = [table[st.type] for st in p.sample_type].index("samples")
        for s in p.sample:
            if s.value[cpu]:
                # py-spy (without --native) ends stacks at the Python frame: fold our `<native> callee` leaf into it
                frames = [locations[i] for i in reversed(s.location_id)]
                while frames and frames[-1][0].startswith("<native>"):
                    frames.pop()
                yield frames, s.value[cpu], s.value[count]


def shares(stacks, program: str):
    self_, total, all_ = defaultdict(float), defaultdict(float), 0.0
    for frames, weight in stacks:
        if not any(f == program for _, f in frames):
            continue
        all_ += weight
        self_[frames[-1]] += weight
        for fn in set(frames):
            total[fn] += weight
    if not all_:
        return {}, {}
    return ({k: 100 * v / all_ for k, v in self_.items()}, {k: 100 * v / all_ for k, v in total.items()})


def run(program: Path, py_spy: str, workdir: Path, runs: int = 0, min_samples: int = 2000, max_runs: int = 40,
        timers: bool = True):
    """Pool runs of `program`: exactly `runs` of them, or (runs=0) until py-spy has `min_samples` in the program."""
    spy, ours, truth = [], [], None
    i = 0
    while (i < runs) if runs else (i < max_runs and _in_program(spy, program.name) < min_samples):
        s, o, t = _run_once(program, py_spy, workdir / str(i), timers)
        spy += s
        ours += o
        truth = _pool_truth(truth, t)
        i += 1
    our_n = sum(n for f, _, n in ours if any(x == program.name for _, x in f))
    ours = [(f, w) for f, w, _ in ours]
    in_handler = [any(name == "Sampler._on_signal" for name, _ in f) for f, _ in spy]
    spy_all = sum(c for f, c in spy if any(x == program.name for _, x in f))
    agent = sum(c for (f, c), h in zip(spy, in_handler) if h and any(x == program.name for _, x in f))
    spy = [fc for fc, h in zip(spy, in_handler) if not h]
    counts = (spy_all, sum(w for f, w in ours if any(x == program.name for _, x in f)) / 1e9)
    return (shares(spy, program.name), shares(ours, program.name), (100 * agent / spy_all if spy_all else 0.0),
            counts + (our_n, i), truth)


def _pool_truth(pooled, run):
    """The runs' CPU per function on the threads' own clocks, summed: (function -> ns, program ns)."""
    if run is None:
        return pooled
    cpu, total = pooled or ({}, 0)
    for name, ns in run["cpu_ns"].items():
        cpu[name] = cpu.get(name, 0) + ns
    return cpu, total + run["program_ns"]


def _in_program(stacks, name: str) -> int:
    return sum(c for f, c in stacks if any(x == name for _, x in f))


def _run_once(program: Path, py_spy: str, workdir: Path, timers: bool = True):
    workdir.mkdir(parents=True)
    store = workdir / "store"
    raw = workdir / "py-spy.txt"
    truth = workdir / "truth.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    env.update({"ACCURACY_TRUTH": str(truth), "CLOUDPROF_ENABLED": "1", "CLOUDPROF_SERVICE": "accuracy",
                "CLOUDPROF_STORAGE": f"file://{store}", "CLOUDPROF_UPLOAD_INTERVAL_S": "3600",
                "CLOUDPROF_THREAD_CPU_TIMERS": str(timers).lower(),
                "PYTHONPATH": os.pathsep.join([str(BOOTSTRAP_DIR), str(REPO)])})
    subprocess.run([py_spy, "record", "-r", "100", "-f", "raw", "-o", str(raw), "--", sys.executable, str(program)],
                   env=env, check=True, capture_output=True, cwd=workdir)
    timed = json.loads(truth.read_text()) if truth.exists() else None
    return list(py_spy_stacks(raw)), list(our_stacks(store)), timed


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("programs", nargs="*", type=Path)
    ap.add_argument("--threshold", type=float, default=5.0)
    ap.add_argument("--min-samples", type=int, default=2000,
                    help="pool runs of each program until py-spy has this many samples in it (default 2000)")
    ap.add_argument("--max-runs", type=int, default=40, help="cap on pooled runs per program with --min-samples")
    ap.add_argument("--runs", type=int, default=0, help="run every program exactly this many times instead")
    ap.add_argument("--no-timers", action="store_true", help="the agent without per-thread CPU timers")
    args = ap.parse_args(argv)
    programs = args.programs or sorted(HERE.glob("p*_*.py"))
    py_spy = shutil.which("py-spy", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    if not py_spy:
        print("py-spy not found (pip install py-spy)", file=sys.stderr)
        return 1
    flagged_total = 0
    for program in programs:
        program = program.resolve()
        with tempfile.TemporaryDirectory() as tmp:
            (spy_self, spy_total), (our_self, our_total), agent_pct, (spy_n, our_s, our_n, runs), truth = run(
                program, py_spy, Path(tmp), args.runs, args.min_samples, args.max_runs, not args.no_timers)
        se = 100 * (0.25 / max(spy_n, 1) + 0.25 / max(our_n, 1)) ** 0.5
        print(f"\n## {program.name}: {runs} runs; py-spy {spy_n} samples, ours {our_n} samples, {our_s:.2f} CPU s; "
              f"py-spy sees {agent_pct:.2f}% of samples inside our handler; "
              f"s.e. of a difference at 50% share {se:.1f} points")
        # a program that times its own parts on its threads' clocks (_truth.py) is judged against that
        true_total = {(name, program.name): 100 * ns / truth[1] for name, ns in truth[0].items()} if truth else {}
        print(f"{'function':<44} {'self py-spy':>11} {'self ours':>9} {'diff':>6}   "
              f"{'total py-spy':>12} {'total ours':>10} {'diff':>6}" + ("   total truth  py-spy   ours" * bool(truth)))
        keys = {k for k in set(spy_total) | set(our_total)
                if max(spy_total.get(k, 0), our_total.get(k, 0), spy_self.get(k, 0), our_self.get(k, 0)) >= 2}
        worst = worst_spy = 0.0
        for key in sorted(keys, key=lambda k: -spy_total.get(k, 0)):
            if key[1] != program.name and max(spy_self.get(key, 0), our_self.get(key, 0)) < 2:
                continue  # callers outside the program (runpy, threading) add nothing to read
            ds = our_self.get(key, 0) - spy_self.get(key, 0)
            dt = our_total.get(key, 0) - spy_total.get(key, 0)
            line = (f"{spy_self.get(key, 0):>10.1f}% {our_self.get(key, 0):>8.1f}% {ds:>+6.1f}   "
                    f"{spy_total.get(key, 0):>11.1f}% {our_total.get(key, 0):>9.1f}% {dt:>+6.1f}")
            judged = not truth or key in true_total  # with a truth, only its parts are judged, against it
            if key in true_total:
                d_spy = spy_total.get(key, 0) - true_total[key]
                dt = our_total.get(key, 0) - true_total[key]
                worst_spy = max(worst_spy, abs(d_spy))
                line += f"   {true_total[key]:>10.1f}% {d_spy:>+7.1f} {dt:>+6.1f}"
                ds = 0.0  # the truth is per block (inclusive); the self columns are read against py-spy only
            flag = " <<" if judged and max(abs(ds), abs(dt)) > args.threshold else ""
            flagged_total += bool(flag)
            if judged:
                worst = max(worst, abs(ds), abs(dt))
            name = f"{key[0]} ({key[1]})"
            print(f"{name[:44]:<44} {line}{flag}")
        if truth:
            print(f"largest difference from the truth: ours {worst:.1f} points, py-spy {worst_spy:.1f} points")
        else:
            print(f"largest difference: {worst:.1f} points")
    print(f"\nrows over {args.threshold:g} points: {flagged_total}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
