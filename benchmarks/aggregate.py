"""Merge throughput of the aggregator vs `go tool pprof -proto`, on agent-like raw uploads in a local store.

    .venv/bin/python benchmarks/aggregate.py                 # 1,000 and 10,000 inputs, 3 runs each, medians
    .venv/bin/python benchmarks/aggregate.py --sizes 1000 --repeat 5

For each size: writes N raw profiles (tests/aggregator/rawgen.py, the agent's
shape) into a fresh file:// store, then in the same run times
  ours: `merge_partition` (default options, so 10,000 inputs go through the
        shard fan-out) in a child process, from listing to published merge;
  go:   `go tool pprof -proto <the same N files>` in a child process;
and prints inputs/s, MB/s (compressed input), peak RSS of each child and the
speed ratio ours/go. Goals: ratio >= 1, ours < 512 MiB RSS at 10,000 inputs.
Sample totals of both outputs are compared, so a fast wrong merge cannot pass.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

CHILD = r"""
import json, resource, sys, time
from datetime import datetime, timezone
from cloudprof.storage import open_store
from cloudprof.aggregator import merge_partition, MergeOptions
store = open_store(sys.argv[1])
hour = datetime(2026, 11, 25, 14, tzinfo=timezone.utc)
started = time.perf_counter()
result = merge_partition(store, "checkout", hour, "cpu", options=MergeOptions(now=datetime(2026, 11, 26, tzinfo=timezone.utc)))
seconds = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "merged": result.merged, "shards": result.shards, "totals": result.totals}))
"""


def generate(root: Path, n: int, stacks: int, depth: int, population: int) -> tuple[str, list[Path], int]:
    from cloudprof.storage import open_store
    from tests.aggregator import rawgen

    url = f"file://{root / 'store'}"
    store = open_store(url)
    rawgen.put_many(store, n, stacks=stacks, depth=depth, population=population or None)
    files = sorted((root / "store").rglob("*.pb.gz"))
    return url, files, sum(f.stat().st_size for f in files)


def run_child(argv: list[str], cwd: Path, stdout) -> tuple[float, int, int]:
    """(seconds, peak RSS KiB, exit status) of a child process, RSS from wait4's rusage."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=cwd, stdout=stdout, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return seconds, usage.ru_maxrss, proc.returncode


def ours(url: str, root: Path) -> dict:
    shutil.rmtree(root / "store" / "merged", ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", CHILD, url], cwd=REPO, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(out.stderr[-3000:])
    return json.loads(out.stdout)


def go(files: list[Path], root: Path, go_bin: str) -> dict:
    links = root / "go"
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir()
    names = []
    for i, f in enumerate(files):  # short relative names keep 10,000 arguments far below ARG_MAX
        name = f"{i}.pb.gz"
        os.symlink(f, links / name)
        names.append(name)
    with open(root / "go.pb.gz", "wb") as sink:
        seconds, rss, _ = run_child([go_bin, "tool", "pprof", "-proto", *names], links, sink)
    return {"seconds": seconds, "rss_kib": rss}


def totals_of(path: Path) -> dict[str, int]:
    from cloudprof.pprof import decode, sample_totals

    return sample_totals(decode(path.read_bytes()))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stacks", type=int, default=150, help="unique stacks per raw profile (one agent minute)")
    parser.add_argument("--depth", type=int, default=24, help="max frames per stack")
    parser.add_argument("--population", type=int, default=3000,
                        help="distinct code paths of the service the stacks come from (0: every stack random, a worst case)")
    parser.add_argument("--go", default=shutil.which("go") or "/usr/lib/go/bin/go")
    args = parser.parse_args()
    print(f"{'inputs':>7} {'impl':>4} {'seconds':>8} {'inputs/s':>9} {'MB/s':>7} {'peak RSS MiB':>12}   runs")
    for n in args.sizes:
        with tempfile.TemporaryDirectory(prefix=f"cloudprof-bench-{n}-") as tmp:
            root = Path(tmp)
            url, files, size = generate(root, n, args.stacks, args.depth, args.population)
            rows = {"ours": [], "go": []}
            for _ in range(args.repeat):  # interleaved, so noise from other work hits both alike
                rows["ours"].append(ours(url, root))
                rows["go"].append(go(files, root, args.go))
            mine = rows["ours"][-1]
            if mine["merged"] != n:
                raise SystemExit(f"ours merged {mine['merged']} of {n} inputs")
            theirs = totals_of(root / "go.pb.gz")
            if theirs != mine["totals"]:
                raise SystemExit(f"totals differ: ours {mine['totals']} vs go {theirs}")
            med = {}
            for impl, runs in rows.items():
                secs = statistics.median(r["seconds"] for r in runs)
                rss = max(r["rss_kib"] for r in runs) / 1024
                med[impl] = secs
                print(f"{n:>7} {impl:>4} {secs:>8.2f} {n / secs:>9.0f} {size / 1e6 / secs:>7.2f} {rss:>12.0f}   "
                      + ", ".join(f"{r['seconds']:.2f}" for r in runs)
                      + (f"  (shards: {runs[0]['shards']})" if impl == "ours" else ""))
            print(f"{n:>7} ratio ours/go speed = {med['go'] / med['ours']:.2f}x   "
                  f"(input {size / 1e6:.1f} MB, {size / n / 1024:.1f} KiB per profile; totals identical)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
