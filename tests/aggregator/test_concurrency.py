"""Two aggregators at once on the same partition (separate processes): nothing lost, nothing doubled."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta

from cloudprof.aggregator import MergeOptions, Partition, merge_partition
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact
from tests.support import REPO

PART = Partition("checkout", rawgen.HOUR, "cpu")

WORKER = """
import sys
from datetime import datetime, timezone
from cloudprof.storage import open_store
from cloudprof.aggregator import merge_partition, MergeOptions
store = open_store(sys.argv[1])
for _ in range(int(sys.argv[2])):
    r = merge_partition(store, "checkout", datetime(2026, 11, 25, 14, tzinfo=timezone.utc), "cpu",
                        options=MergeOptions(now=datetime(2026, 11, 25, 14, 30, tzinfo=timezone.utc)))
    print(r.merged, r.quarantined, r.attempts, flush=True)
"""


def start_workers(url: str, count: int, rounds: int) -> list[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", WORKER, url, str(rounds)], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for _ in range(count)]


def finish(workers) -> list[list[int]]:
    rows = []
    for worker in workers:
        out, err = worker.communicate(timeout=300)
        assert worker.returncode == 0, err
        rows += [[int(x) for x in line.split()] for line in out.splitlines()]
    return rows


def concurrent_exactly_once(url: str, store, *, n: int = 120, late: int = 40, workers: int = 2, rounds: int = 3):
    uploads = rawgen.put_many(store, n, stacks=10)
    bad = [PART.raw_prefix + f"web-8.8.{1795615201000 + i}.{i}.pb.gz" for i in range(3)]
    for key in bad:
        store.put(key, b"garbage")
    procs = start_workers(url, workers, rounds)
    uploads += rawgen.put_many(store, late, start=n, stacks=10)  # late arrivals while they run
    rows = finish(procs)
    final = merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=rawgen.HOUR + timedelta(hours=2)))
    assert_exact(store, PART, uploads, bad_keys=bad)
    # The runs' own counts: each input merged by exactly one committed attempt.
    assert sum(r[0] for r in rows) + final.merged == n + late
    assert sum(r[1] for r in rows) + final.quarantined == len(bad)
    return rows


def test_two_processes_on_a_local_partition(local_url, local_store):
    rows = concurrent_exactly_once(local_url, local_store)
    print("merged, quarantined, attempts per run:", rows)
