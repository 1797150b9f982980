"""Exactly once on every backend: local, memory, S3 (moto), GCS (fake-gcs-server).

Reruns, late inputs and bad inputs on each store; crashes between the profile
and manifest writes, and two aggregator processes at once, on the stores that
other processes can reach (local, moto's HTTP server, fake-gcs-server).
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudprof.aggregator import MergeOptions, Partition, merge_partition
from cloudprof.aggregator.merge import CRASH_ENV
from cloudprof.storage import open_store
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact, merge_in_subprocess
from tests.aggregator.test_concurrency import concurrent_exactly_once

PART = Partition("checkout", rawgen.HOUR, "cpu")
DURING = MergeOptions(now=rawgen.HOUR + timedelta(minutes=50))
CLOSED = MergeOptions(now=rawgen.HOUR + timedelta(hours=3))


def test_rerun_late_and_bad_inputs_on_every_backend(store_url):
    store = open_store(store_url)
    first = rawgen.put_many(store, 12, stacks=10)
    bad = [PART.raw_prefix + "web-9.9.1795615201000.900.pb.gz", PART.raw_prefix + "web-9.9.1795615201000.901.pb.gz"]
    store.put(bad[0], b"")
    store.put(bad[1], first[0].data[:100])
    r1 = merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=DURING)
    assert (r1.merged, r1.quarantined, r1.open) == (12, 2, True)
    r2 = merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=DURING)
    assert (r2.merged, r2.quarantined, r2.changed) == (0, 0, False)
    late = rawgen.put_many(store, 7, start=12, stacks=10)
    r3 = merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (r3.merged, r3.already, r3.open) == (7, 14, False)
    assert_exact(store, PART, first + late, bad_keys=bad)


@pytest.mark.parametrize("point", ["after_object", "after_manifest"])
def test_kill_between_profile_and_manifest_then_rerun(shared_store, point):
    url, store = shared_store
    base = rawgen.put_many(store, 6, stacks=10)
    merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    late = rawgen.put_many(store, 6, start=6, stacks=10)
    crashed = merge_in_subprocess(url, PART, env={CRASH_ENV: point})
    assert crashed.returncode == 77, crashed.stderr
    rerun = merge_partition(store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert rerun.merged == (6 if point == "after_object" else 0)
    assert_exact(store, PART, base + late)


@pytest.mark.slow
def test_two_aggregator_processes_at_once(shared_store):
    url, store = shared_store
    concurrent_exactly_once(url, store, n=60, late=20, rounds=2)
