"""--pending: which partitions have work left, and aggregating many of them in a process pool."""

from __future__ import annotations

from datetime import timedelta

from cloudprof.aggregator import MergeOptions, Partition, aggregate, find_pending, merge_partition
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact

H0 = rawgen.HOUR
H1 = rawgen.HOUR + timedelta(hours=1)
LATER = H0 + timedelta(hours=5)


def _fleet(store):
    uploads = {}
    for service in ("checkout", "search"):
        for hour in (H0, H1):
            uploads[Partition(service, hour, "cpu")] = rawgen.put_many(store, 6, service, hour=hour)
    return uploads


def test_find_pending_sees_new_inputs_open_hours_and_stale_copies(local_store):
    uploads = _fleet(local_store)
    assert find_pending(local_store, now=LATER) == sorted(uploads)
    for part in uploads:
        merge_partition(local_store, part.service, part.hour, part.kind, options=MergeOptions(now=LATER))
    assert find_pending(local_store, now=LATER) == []
    late = rawgen.put_raw(local_store, "search", hour=H1, index=50)
    assert find_pending(local_store, now=LATER) == [Partition("search", H1, "cpu")]
    assert find_pending(local_store, service="checkout", now=LATER) == []
    assert find_pending(local_store, hours=[H0], now=LATER) == []
    merge_partition(local_store, "search", H1, "cpu", options=MergeOptions(now=LATER))
    uploads[Partition("search", H1, "cpu")].append(late)
    # A published copy that lags its manifest (crash after commit) is pending too.
    part = Partition("checkout", H0, "cpu")
    local_store.delete(part.merged_key)
    assert find_pending(local_store, now=LATER) == [part]
    merge_partition(local_store, part.service, part.hour, part.kind, options=MergeOptions(now=LATER))
    for p, ups in uploads.items():
        assert_exact(local_store, p, ups)


def test_an_open_manifest_is_pending_once_the_hour_is_over(memory_store):
    ups = rawgen.put_many(memory_store, 3)
    merge_partition(memory_store, "checkout", H0, "cpu", options=MergeOptions(now=H0 + timedelta(minutes=10)))
    assert find_pending(memory_store, now=H0 + timedelta(minutes=20)) == []
    assert find_pending(memory_store, now=LATER) == [Partition("checkout", H0, "cpu")]
    assert_exact(memory_store, Partition("checkout", H0, "cpu"), ups)


def test_aggregate_in_a_process_pool(local_store):
    uploads = _fleet(local_store)
    local_store.put(Partition("search", H0, "cpu").raw_prefix + "web-1.1.1795615201000.77.pb.gz", b"")
    seen = []
    report = aggregate(local_store, find_pending(local_store, now=LATER), workers=2, options=MergeOptions(now=LATER),
                       progress=lambda done, total: seen.append((done, total)))
    assert not report.failures
    assert (len(report.results), report.merged, report.quarantined) == (4, 24, 1)
    assert seen[-1] == (4, 4)
    assert "4 partitions, 24 inputs merged, 1 quarantined" in report.summary()
    for part, ups in uploads.items():
        assert_exact(local_store, part, ups)
    again = aggregate(local_store, find_pending(local_store, now=LATER), workers=2, options=MergeOptions(now=LATER))
    assert (len(again.results), again.merged) == (0, 0)


def test_stray_files_outside_agent_folders_are_left_alone(memory_store):
    ups = rawgen.put_many(memory_store, 2)
    memory_store.put("raw/README.txt", b"ops notes")
    memory_store.put("raw/service=checkout/date=2026-11-25/hour=14/CPU/x.pb.gz", b"odd kind folder")
    memory_store.put("raw/service=Bad Name/date=2026-11-25/hour=14/cpu/x.pb.gz", b"odd service folder")
    junk = Partition("checkout", H0, "cpu").raw_prefix + "notes.txt"
    memory_store.put(junk, b"junk in a real partition")
    pending = find_pending(memory_store, now=LATER)
    assert pending == [Partition("checkout", H0, "cpu")]
    report = aggregate(memory_store, pending, options=MergeOptions(now=LATER))
    assert (report.failures, report.merged, report.quarantined) == ([], 2, 1)
    assert_exact(memory_store, Partition("checkout", H0, "cpu"), ups, bad_keys=[junk])
    assert memory_store.get("raw/README.txt") == b"ops notes"
