"""Query latency: merged hours -> one flame graph page, for a day and for a week.

    .venv/bin/python benchmarks/query.py                  # 24 h and 7 d, 5,000 unique stacks per hour, 3 runs
    .venv/bin/python benchmarks/query.py --runs 5 --browser
    .venv/bin/python benchmarks/query.py --days 0 --s3-latency-ms 30   # S3 latency: 1 vs 8 fetch threads

Setup (not timed): a fresh file:// store; for each of 168 hours, `--uploads`
agent-shaped raw uploads whose stacks together make `--stacks` unique stacks
(drawn from a 4x larger pool, so hours overlap like a real service's do), then
the real aggregator (`merge_partition`) merges each hour.

Timed, per range (the first 24 hours, then all 168): `query_tree` (manifests +
merged generations read, decoded and folded) and `render_flamegraph_html`,
written to benchmarks/out/. Prints medians over `--runs`, objects read (vs the
raw uploads the range holds), page size and frames; `--browser` also loads the
page in headless chromium and times its first full canvas draw.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloudprof.aggregator import MergeOptions, merge_partition  # noqa: E402
from cloudprof.pprof import ProfileBuilder, encode  # noqa: E402
from cloudprof.query import QueryStats, Selection, query_tree  # noqa: E402
from cloudprof.render import render_flamegraph_html  # noqa: E402
from cloudprof.storage import open_store  # noqa: E402
from cloudprof.storage.keys import RawKey  # noqa: E402
from tests.query.data import HOUR, PERIOD, SERVICE, synthetic_stacks  # noqa: E402

OUT = REPO / "benchmarks" / "out"


def populate(store, hours: int, stacks: int, uploads: int) -> int:
    pool = synthetic_stacks(stacks * 4, seed=11, functions=800, depth=(8, 24))
    done = MergeOptions(now=HOUR + timedelta(hours=hours + 48))
    written = 0
    for h in range(hours):
        hour = HOUR + timedelta(hours=h)
        rnd = random.Random(h)
        chosen = rnd.sample(range(len(pool)), stacks)
        per = len(chosen) // uploads
        for u in range(uploads):
            start_ms = int((hour + timedelta(minutes=u * 60 // uploads)).timestamp() * 1000)
            b = ProfileBuilder()
            b.time_nanos = start_ms * 1_000_000
            b.duration_nanos = 60 * 10**9
            for text in (f"service={SERVICE}", "version=1.0", "host=web-1", "pid=1"):
                b.comment(text)
            for i in chosen[u * per:(u + 1) * per] if u < uploads - 1 else chosen[u * per:]:
                n = 1 + rnd.randrange(40)
                b.add_frames(list(reversed(pool[i])), [n, n * PERIOD, n * PERIOD * 11 // 10],
                             (("thread_name", f"worker-{i % 4}"),))
            key = RawKey.for_window(SERVICE, "cpu", f"web-{u % 3}", 100 + u, start_ms, u).build()
            store.put(key, encode(b.build()))
            written += 1
        merge_partition(store, SERVICE, hour, "cpu", options=done)
        if (h + 1) % 24 == 0:
            print(f"  setup: {h + 1} hours merged", flush=True)
    return written


def browser_draw_ms(path: Path) -> tuple[float, float]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = b.new_page(viewport={"width": 1440, "height": 900})
        t0 = time.perf_counter()
        page.goto(path.resolve().as_uri())
        page.wait_for_function("window.cloudprof && window.cloudprof.ready", timeout=120_000)
        load = time.perf_counter() - t0
        draws = [page.evaluate("window.cloudprof.timeDraw()") for _ in range(5)]
        b.close()
    return load, statistics.median(draws)


def s3_latency(hours: int, stacks: int, uploads: int, latency_ms: float, runs: int) -> None:
    """The same query on S3 (moto's HTTP server) behind a proxy adding `latency_ms` to every request:
    one fetch at a time vs the default worker threads."""
    import os as _os

    for name, value in {"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
                        "AWS_CONFIG_FILE": _os.devnull, "AWS_SHARED_CREDENTIALS_FILE": _os.devnull,
                        "AWS_EC2_METADATA_DISABLED": "true"}.items():
        _os.environ[name] = value
    from moto.server import ThreadedMotoServer

    from tests.servers import FaultProxy

    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        direct = f"http://{host}:{port}"
        import boto3

        boto3.client("s3", endpoint_url=direct, region_name="us-east-1").create_bucket(Bucket="bench")
        populate(open_store("s3://bench/p", endpoint_url=direct, region_name="us-east-1"), hours, stacks, uploads)
        proxy = FaultProxy(direct, rule=lambda method, path, headers: ("delay", latency_ms / 1000))
        slow = open_store("s3://bench/p", endpoint_url=proxy.endpoint_url, region_name="us-east-1")
        sel = Selection(SERVICE, HOUR, HOUR + timedelta(hours=hours))
        print(f"\nS3 (moto) with {latency_ms:g} ms added per request, {hours} merged hours:")
        for workers in (1, 8):
            times = []
            for _ in range(runs):
                stats = QueryStats()
                t0 = time.perf_counter()
                query_tree(slow, sel, stats, workers=workers)
                times.append(time.perf_counter() - t0)
            print(f"  {workers} fetch thread{'s' if workers > 1 else ' '}: {statistics.median(times):6.2f} s "
                  f"({stats.objects_read} objects + {stats.list_calls} listings)")
        proxy.close()
    finally:
        server.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stacks", type=int, default=5000, help="unique stacks per merged hour")
    ap.add_argument("--uploads", type=int, default=4, help="raw uploads per hour (all merged)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--days", type=int, default=7)
    ap.add_argument("--browser", action="store_true", help="also time the page in headless chromium")
    ap.add_argument("--s3-latency-ms", type=float, default=0,
                    help="also query 24 h on moto S3 behind a proxy adding this latency per request")
    args = ap.parse_args()
    if args.s3_latency_ms:
        s3_latency(24, args.stacks, args.uploads, args.s3_latency_ms, args.runs)
        if args.days == 0:
            return
    hours_total = 24 * args.days
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="cloudprof-bench-") as tmp:
        store = open_store(f"file://{tmp}/store")
        t0 = time.perf_counter()
        uploads = populate(store, hours_total, args.stacks, args.uploads)
        print(f"setup: {hours_total} hours, {uploads} raw uploads, {args.stacks} unique stacks/hour, "
              f"merged by the aggregator in {time.perf_counter() - t0:.1f} s\n")
        print(f"{'range':>6} {'query s':>8} {'render s':>9} {'total s':>8} {'cpu s':>6} {'objects':>8} {'raw uploads':>11} "
              f"{'MB read':>8} {'frames':>8} {'page MB':>8}" + (f" {'load s':>7} {'draw ms':>8}" if args.browser else ""))
        for hours in sorted({24, hours_total}):
            sel = Selection(SERVICE, HOUR, HOUR + timedelta(hours=hours))
            q_times, r_times, cpu_times = [], [], []
            for _ in range(args.runs):
                stats = QueryStats()
                c1 = time.process_time()  # every thread of this process: a load-independent figure
                t1 = time.perf_counter()
                tree = query_tree(store, sel, stats)
                t2 = time.perf_counter()
                page = render_flamegraph_html(tree, title=f"{SERVICE} \u00b7 {hours} h")
                t3 = time.perf_counter()
                cpu_times.append(time.process_time() - c1)
                q_times.append(t2 - t1)
                r_times.append(t3 - t2)
            path = OUT / f"query-{hours}h.html"
            path.write_text(page)
            q, r = statistics.median(q_times), statistics.median(r_times)
            label = f"{hours // 24} d" if hours > 24 else f"{hours} h"
            line = (f"{label:>6} {q:8.2f} {r:9.2f} {q + r:8.2f} {statistics.median(cpu_times):6.2f} {stats.objects_read:8d} {uploads * hours // hours_total:11d} "
                    f"{stats.bytes_read / 1e6:8.1f} {len(tree):8,d} {len(page) / 1e6:8.1f}")
            if args.browser:
                load, draw = browser_draw_ms(path)
                line += f" {load:7.2f} {draw:8.1f}"
            print(line, flush=True)
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"\npages: {OUT}/query-24h.html, {OUT}/query-{hours_total}h.html (medians of {args.runs} runs; "
              f"load average {load} on {os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
