"""Fan-out: a sharded merge equals the single merge, and survives overlap with another run."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudprof.aggregator import (
    MergeOptions, Partition, ShardNotReady, merge_partition, plan_shards, read_manifest, read_merged, reduce_shards, run_shard,
)
from cloudprof.pprof import decode
from cloudprof.storage import open_store
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact, canonical

PART = Partition("checkout", rawgen.HOUR, "cpu")
NOW = rawgen.HOUR + timedelta(hours=3)


def _copy(src, dst):
    for info in src.list("raw/"):
        dst.put(info.key, src.get(info.key))


@pytest.mark.slow
def test_sharded_merge_of_5000_inputs_equals_the_single_merge():
    single = open_store("memory://shards-single")
    sharded = open_store("memory://shards-sharded")
    uploads = rawgen.put_many(single, 5000, stacks=6, depth=6)
    bad = PART.raw_prefix + "web-1.1.1795615201000.99999.pb.gz"
    single.put(bad, b"\x1f\x8b broken")
    _copy(single, sharded)

    one = merge_partition(single, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=NOW, shard_threshold=10_000))
    many = merge_partition(sharded, "checkout", rawgen.HOUR, "cpu",
                           options=MergeOptions(now=NOW, shard_threshold=1_000, shard_size=700))
    assert one.shards == 0 and many.shards == 8
    assert (many.merged, many.quarantined) == (one.merged, one.quarantined) == (5000, 1)
    a = assert_exact(single, PART, uploads, bad_keys=[bad])["profile"]
    b = assert_exact(sharded, PART, uploads, bad_keys=[bad])["profile"]
    assert canonical(a) == canonical(b)
    assert (a.time_nanos, a.duration_nanos, a.period) == (b.time_nanos, b.duration_nanos, b.period)
    assert not list(sharded.list(PART.shards_prefix)), "shard objects left behind"


def test_shards_as_separate_invocations_and_a_run_that_overlaps(memory_store):
    """Plan, run shards one by one (as separate serverless calls would), while another run commits some inputs."""
    uploads = rawgen.put_many(memory_store, 60)
    infos = list(memory_store.list(PART.raw_prefix))
    plan_key = plan_shards(memory_store, PART, infos, shard_size=20)
    run_shard(memory_store, plan_key, 0)
    with pytest.raises(ShardNotReady):
        reduce_shards(memory_store, plan_key, options=MergeOptions(now=NOW))
    run_shard(memory_store, plan_key, 1)
    run_shard(memory_store, plan_key, 1)  # a retried invocation is a no-op
    run_shard(memory_store, plan_key, 2)
    # Meanwhile a plain run commits everything plus late inputs: every shard now overlaps the manifest.
    late = rawgen.put_many(memory_store, 5, start=60)
    merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=NOW))
    result = reduce_shards(memory_store, plan_key, options=MergeOptions(now=NOW))
    assert result.merged == 0
    assert_exact(memory_store, PART, uploads + late)


def test_reduce_reuses_shards_that_do_not_overlap(memory_store):
    first = rawgen.put_many(memory_store, 10)
    merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=NOW))
    more = rawgen.put_many(memory_store, 40, start=10)
    known = read_manifest(memory_store, PART.manifest_key)[0].kind("cpu").keys()
    infos = [i for i in memory_store.list(PART.raw_prefix) if i.key not in known]
    plan_key = plan_shards(memory_store, PART, infos, shard_size=15)
    for index in range(3):
        run_shard(memory_store, plan_key, index)
    result = reduce_shards(memory_store, plan_key, options=MergeOptions(now=NOW))
    assert (result.merged, result.shards) == (40, 3)
    found = assert_exact(memory_store, PART, first + more)
    assert decode(read_merged(memory_store, PART.manifest_key, "cpu")).duration_nanos == 50 * 60 * 10**9
    assert found["manifest"].kind("cpu").merged == 50


def test_a_shard_killed_after_quarantining_still_records_the_input(local_url, local_store):
    from cloudprof.aggregator.merge import CRASH_ENV
    from tests.aggregator.checks import run_python

    uploads = rawgen.put_many(local_store, 6)
    bad = PART.raw_prefix + "web-1.1.1795615201000.99.pb.gz"
    local_store.put(bad, b"")
    plan_key = plan_shards(local_store, PART, list(local_store.list(PART.raw_prefix)), shard_size=100)
    crashed = run_python(f"from cloudprof.storage import open_store\nfrom cloudprof.aggregator import run_shard\n"
                         f"run_shard(open_store({local_url!r}), {plan_key!r}, 0)", env={CRASH_ENV: "after_quarantine"})
    assert crashed.returncode == 77, crashed.stderr
    run_shard(local_store, plan_key, 0)  # the retried invocation no longer finds the bad input in raw/
    reduce_shards(local_store, plan_key, options=MergeOptions(now=NOW))
    assert_exact(local_store, PART, uploads, bad_keys=[bad])
    entries = {e.key: e for e in read_manifest(local_store, PART.manifest_key)[0].kind("cpu").inputs}
    assert entries[bad].status == "quarantined" and entries[bad].reason == "empty"
