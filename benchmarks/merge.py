"""Merge throughput: cloudprof's merge against `go tool pprof -proto` on the same generated profiles.

    .venv/bin/python benchmarks/merge.py [--profiles 1000] [--samples 2000] [--functions 500] [--runs 3]

Generates realistic agent-like CPU profiles deterministically (a Python service's
call graph, ~2,000 unique stacks and ~500 functions per profile, thread labels),
writes them to a temp dir, then merges them with `cloudprof merge` and with
`go tool pprof -proto`, each in its own subprocess so wall time and peak RSS are
the child's alone. Prints medians of --runs runs, the ratio, and peak RSS at a
quarter of the inputs, to show memory does not grow with the number of inputs.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloudprof.pprof import ProfileBuilder, encode  # noqa: E402

THREADS = ("MainThread", "worker-1", "worker-2", "asyncio_0")


class Service:
    """A fixed call graph of a made-up Python service and the stacks it runs, the same for every profile.

    Stacks are drawn from a fixed population with a long-tailed popularity, as in
    a real service: over an hour the set of distinct stacks saturates while the
    number of samples keeps growing.
    """

    def __init__(self, nfunctions: int, nstacks: int, seed: int = 7) -> None:
        rng = random.Random(seed)
        modules = [f"/srv/app/{pkg}/{mod}.py" for pkg in ("api", "core", "db", "util", "vendor/lib")
                   for mod in ("views", "models", "handlers", "cache", "codec", "pool", "tasks", "helpers")]
        self.functions = []
        for i in range(nfunctions):
            filename = rng.choice(modules)
            cls = rng.choice(("", "", "Session.", "Handler.", "Encoder.", "Pool."))
            start = rng.randrange(1, 2000)
            self.functions.append((f"{cls}fn_{i}", filename, start))
        # Each function calls a few later ones; entry points are the first few.
        self.children = [sorted(rng.sample(range(i + 1, nfunctions), min(5, nfunctions - i - 1)))
                         for i in range(nfunctions)]
        self.entries = list(range(6))
        self.stacks = [self._walk(rng) for _ in range(nstacks)]
        self.cum_weights = list(itertools.accumulate(1.0 / (rank + 20) for rank in range(nstacks)))

    def _walk(self, rng: random.Random) -> tuple[tuple[str, str, int, int], ...]:
        f = rng.choice(self.entries)
        frames = []
        depth = rng.randint(6, 30)
        while True:
            name, filename, start = self.functions[f]
            frames.append((name, filename, start + rng.randrange(0, 40, 4), start))
            if len(frames) >= depth or not self.children[f]:
                break
            f = rng.choice(self.children[f])
        frames.reverse()  # leaf first
        return tuple(frames)


_SERVICES: dict[int, Service] = {}


def _service(functions: int) -> Service:
    # Pool sizes chosen so one profile of 2,000 unique stacks touches about `functions` functions.
    if functions not in _SERVICES:
        _SERVICES[functions] = Service(int(functions * 2.75), nstacks=functions * 40)
    return _SERVICES[functions]


def make_profile(index: int, samples: int, functions: int) -> bytes:
    service = _service(functions)
    rng = random.Random(index)
    b = ProfileBuilder()
    b.time_nanos = 1_764_000_000_000_000_000 + index * 60_000_000_000
    b.duration_nanos = 60_000_000_000
    b.comment(f"service=bench host=host-{index % 16} pid={1000 + index % 7}")
    while b.sample_count < samples:
        frames = rng.choices(service.stacks, cum_weights=service.cum_weights)[0]
        thread = THREADS[min(int(rng.expovariate(1.5)), len(THREADS) - 1)]
        count = 1 + int(rng.expovariate(0.3))
        b.add_frames(frames, [count, count * rng.randrange(5_000_000, 10_000_001, 1000), count * 10_000_000],
                     (("thread_name", thread),))
    return encode(b.build())


def _write(args: tuple[int, int, int, str]) -> int:
    index, samples, functions, folder = args
    data = make_profile(index, samples, functions)
    Path(folder, f"p{index:05d}.pb.gz").write_bytes(data)
    return len(data)


def generate(folder: Path, count: int, samples: int, functions: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(_write, [(i, samples, functions, str(folder)) for i in range(count)], chunksize=16))


_MEASURE = r"""
import json, resource, subprocess, sys, time
t = time.perf_counter()
rc = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
elapsed = time.perf_counter() - t
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"rc": rc.returncode, "seconds": elapsed, "peak_mib": usage.ru_maxrss / 1024,
                  "cpu_seconds": usage.ru_utime + usage.ru_stime,
                  "stderr": rc.stderr.decode(errors="replace")[-2000:]}))
"""


def measure(cmd: list[str]) -> dict:
    """Run cmd in a fresh process whose only child it is, so RUSAGE_CHILDREN is cmd's own peak RSS."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise SystemExit(f"{cmd[0]} failed ({result['rc']}): {result['stderr']}")
    return result


def pprof_binary() -> list[str]:
    go = shutil.which("go")
    if not go:
        raise SystemExit("go is not installed: go tool pprof is the baseline")
    tooldir = subprocess.run([go, "env", "GOTOOLDIR"], capture_output=True, text=True, check=True).stdout.strip()
    binary = Path(tooldir, "pprof")
    return [str(binary)] if binary.exists() else [go, "tool", "pprof"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profiles", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--functions", type=int, default=500)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", metavar="DIR", help="generate into DIR and keep it (reused if present)")
    args = parser.parse_args()

    tmp = None
    if args.keep:
        folder = Path(args.keep)
    else:
        tmp = tempfile.mkdtemp(prefix="cloudprof-bench-")
        folder = Path(tmp)
    try:
        files = sorted(folder.glob("p*.pb.gz"))
        if len(files) != args.profiles:
            t = time.perf_counter()
            generate(folder, args.profiles, args.samples, args.functions)
            files = sorted(folder.glob("p*.pb.gz"))
            print(f"generated {len(files)} profiles in {time.perf_counter() - t:.1f}s into {folder}")
        from cloudprof.pprof import decode

        first = decode(files[0].read_bytes())
        total_bytes = sum(f.stat().st_size for f in files)
        print(f"inputs: {len(files)} files, {total_bytes / 1e6:.1f} MB gzipped; first has {len(first.sample)} samples, "
              f"{len(first.function)} functions, {len(first.location)} locations")

        ours = [sys.executable, "-m", "cloudprof", "merge", *map(str, files), "-o", str(folder / "ours.pb.gz")]
        theirs = [*pprof_binary(), "-proto", "-symbolize=none", "-output", str(folder / "go.pb.gz"), *map(str, files)]
        quarter = files[: max(1, len(files) // 4)]
        ours_quarter = [sys.executable, "-m", "cloudprof", "merge", *map(str, quarter), "-o", str(folder / "q.pb.gz")]
        runs: dict[str, list[dict]] = {"cloudprof": [], "go tool pprof": [], "cloudprof (1/4 inputs)": []}
        for _ in range(args.runs):
            runs["cloudprof"].append(measure(ours))
            runs["go tool pprof"].append(measure(theirs))
            runs["cloudprof (1/4 inputs)"].append(measure(ours_quarter))

        rows = {}
        for name, results in runs.items():
            n = len(quarter) if "1/4" in name else len(files)
            nbytes = sum(f.stat().st_size for f in (quarter if "1/4" in name else files))
            seconds = statistics.median(r["seconds"] for r in results)
            peak = statistics.median(r["peak_mib"] for r in results)
            cpu = statistics.median(r["cpu_seconds"] for r in results)
            rows[name] = (seconds, peak, cpu)
            print(f"{name:24s} {n:5d} profiles  {seconds:7.2f} s  {n / seconds:8.1f} profiles/s  "
                  f"{nbytes / 1e6 / seconds:6.2f} MB/s  CPU {cpu:7.2f} s  peak RSS {peak:7.1f} MiB  "
                  "(runs: " + ", ".join(f"{r['seconds']:.2f}" for r in results) + ")")
        ratio = rows["go tool pprof"][0] / rows["cloudprof"][0]
        print(f"speed ratio (go tool pprof time / cloudprof time): {ratio:.2f}x "
              f"({'faster' if ratio >= 1 else 'slower'} than go tool pprof); "
              f"CPU-time ratio {rows['go tool pprof'][2] / rows['cloudprof'][2]:.2f}x")
        unique_q = len(decode((folder / "q.pb.gz").read_bytes()).sample)
        unique = len(decode((folder / "ours.pb.gz").read_bytes()).sample)
        print(f"peak RSS with {len(quarter)} inputs: {rows['cloudprof (1/4 inputs)'][1]:.1f} MiB "
              f"({unique_q} unique stacks merged), with {len(files)}: {rows['cloudprof'][1]:.1f} MiB "
              f"({unique} unique stacks): memory follows unique stacks, not inputs")
        print(f"load average at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs "
              "(wall times are only meaningful on an otherwise idle machine; CPU times are steadier)")
        from cloudprof.pprof import sample_totals

        a = sample_totals(decode((folder / "ours.pb.gz").read_bytes()))
        b = sample_totals(decode((folder / "go.pb.gz").read_bytes()))
        print(f"totals agree with go tool pprof: {a == b} {a}")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
