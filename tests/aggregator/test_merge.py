"""merge_partition on a local store: exact totals, labels, reruns, late inputs, open hours, crashes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudprof.aggregator import MergeOptions, Partition, merge_partition, read_manifest
from cloudprof.aggregator.merge import CRASH_ENV
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact, canonical, labels_of, merge_in_subprocess

PART = Partition("checkout", rawgen.HOUR, "cpu")
CLOSED = MergeOptions(now=rawgen.HOUR + timedelta(hours=3))


def test_merges_every_input_once_and_keeps_labels(local_store):
    uploads = rawgen.put_many(local_store, 30)
    result = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (result.merged, result.quarantined, result.changed) == (30, 0, True)
    found = assert_exact(local_store, PART, uploads)
    assert {"thread_name", "task_name", "endpoint", "version"} <= labels_of(found["profile"])
    assert found["manifest"].open is False
    assert found["profile"].duration_nanos == 30 * 60 * 1_000_000_000
    assert found["profile"].time_nanos == min(int(u.key.split(".")[-4]) for u in uploads) * 1_000_000


def test_version_label_splits_a_merged_hour_by_release(memory_store):
    old = rawgen.put_many(memory_store, 5, version="1.0.0")
    new = rawgen.put_many(memory_store, 5, start=5, version="2.0.0")
    merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    profile = assert_exact(memory_store, PART, old + new)["profile"]
    by_version: dict[str, list[int]] = {}
    for (_stack, labels), values in canonical(profile).items():
        version = dict(labels)["version"]
        by_version[version] = [a + b for a, b in zip(by_version.get(version, [0, 0, 0]), values)]
    assert by_version["2.0.0"] == list(rawgen.sum_totals(new).values())
    assert by_version["1.0.0"] == list(rawgen.sum_totals(old).values())


def test_second_run_changes_nothing(local_store):
    uploads = rawgen.put_many(local_store, 10)
    merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    etag = local_store.head(PART.manifest_key).etag
    again = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (again.merged, again.already, again.changed) == (0, 10, False)
    assert local_store.head(PART.manifest_key).etag == etag
    assert_exact(local_store, PART, uploads)


def test_late_inputs_fold_into_an_open_hour_then_it_closes(local_store):
    during = MergeOptions(now=rawgen.HOUR + timedelta(minutes=40))
    first = rawgen.put_many(local_store, 8)
    r1 = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=during)
    assert r1.open and read_manifest(local_store, PART.manifest_key)[0].open
    late = rawgen.put_many(local_store, 5, start=8)
    r2 = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=rawgen.HOUR + timedelta(minutes=70)))
    assert (r2.merged, r2.already, r2.open) == (5, 8, True)  # still inside the grace period
    later = rawgen.put_many(local_store, 2, start=13)
    r3 = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (r3.merged, r3.open) == (2, False)
    found = assert_exact(local_store, PART, first + late + later)
    assert found["manifest"].open is False
    # Superseded generations are removed; only the committed one is left.
    objects = [i.key for i in local_store.list(PART.objects_prefix)]
    assert objects == [found["manifest"].kind("cpu").output.object]


def test_closing_an_hour_without_new_inputs_rewrites_only_the_flag(local_store):
    uploads = rawgen.put_many(local_store, 3)
    merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=MergeOptions(now=rawgen.HOUR + timedelta(minutes=5)))
    r = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert r.changed and not r.open and r.merged == 0
    assert read_manifest(local_store, PART.manifest_key)[0].open is False
    assert_exact(local_store, PART, uploads)


def test_kinds_share_one_manifest(memory_store):
    cpu = rawgen.put_many(memory_store, 4)
    mem_types = (("alloc_objects", "count"), ("alloc_space", "bytes"))
    mem = [rawgen.put_raw(memory_store, index=i, kind="memory", sample_types=mem_types, period_type=("space", "bytes")) for i in range(3)]
    merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    merge_partition(memory_store, "checkout", rawgen.HOUR, "memory", options=CLOSED)
    assert_exact(memory_store, PART, cpu)
    assert_exact(memory_store, Partition("checkout", rawgen.HOUR, "memory"), mem)
    assert set(read_manifest(memory_store, PART.manifest_key)[0].kinds) == {"cpu", "memory"}


@pytest.mark.parametrize("point", ["after_object", "after_manifest", "after_quarantine"])
def test_killed_mid_run_then_rerun_is_exact(local_url, local_store, point):
    uploads = rawgen.put_many(local_store, 12)
    local_store.put(PART.raw_prefix + "junk.7.1795615260000.0.pb.gz", b"not a profile")
    merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)  # a committed base to build on
    late = rawgen.put_many(local_store, 6, start=12)
    bad = PART.raw_prefix + "web-9.9.1795615260000.99.pb.gz"
    local_store.put(bad, b"")
    crashed = merge_in_subprocess(local_url, PART, env={CRASH_ENV: point}, options="now=datetime(2026, 11, 25, 18, tzinfo=timezone.utc)")
    assert crashed.returncode == 77, crashed.stderr
    rerun = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert rerun.attempts == 1
    assert_exact(local_store, PART, uploads + late, bad_keys=[bad, PART.raw_prefix + "junk.7.1795615260000.0.pb.gz"])
    third = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert third.merged == 0 and not third.changed


def test_killed_before_anything_was_committed(local_url, local_store):
    uploads = rawgen.put_many(local_store, 5)
    crashed = merge_in_subprocess(local_url, PART, env={CRASH_ENV: "after_object"})
    assert crashed.returncode == 77, crashed.stderr
    assert read_manifest(local_store, PART.manifest_key) == (None, None)
    merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert_exact(local_store, PART, uploads)


def test_abandoned_generations_are_removed_only_when_old(local_store, tmp_path):
    import os
    import time

    uploads = rawgen.put_many(local_store, 3)
    old_orphan = PART.objects_prefix + "0" * 32 + ".pb.gz"
    young_orphan = PART.objects_prefix + "1" * 32 + ".pb.gz"
    local_store.put(old_orphan, b"left by a crashed run")
    local_store.put(young_orphan, b"maybe a run about to commit")
    stamp = time.time() - 3 * 3600
    os.utime(tmp_path / "store" / old_orphan, (stamp, stamp))
    merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    left = {i.key for i in local_store.list(PART.objects_prefix)}
    assert old_orphan not in left and young_orphan in left
    assert_exact(local_store, PART, uploads)


def test_version_from_object_metadata_when_the_profile_has_no_comment(memory_store):
    from cloudprof.pprof import decode, encode

    upload = rawgen.put_raw(memory_store, index=0, version="ignored")
    profile = decode(upload.data)
    table = [s.decode() for s in profile.string_table]
    profile.comment[:] = [i for i in profile.comment if not table[i].startswith("version=")]
    memory_store.put(upload.key, encode(profile), metadata={"service": "checkout", "version": "from-metadata"})
    merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    found = assert_exact(memory_store, PART, [upload])
    assert {dict(labels)["version"] for _stack, labels in canonical(found["profile"])} == {"from-metadata"}
    assert found["manifest"].kind("cpu").inputs[0].version == "from-metadata"
