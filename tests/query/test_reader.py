"""Query over storage: merged hours where whole, raw uploads at the edges and where not merged, each input once."""

from __future__ import annotations

from datetime import timedelta

import pytest

from cloudprof.aggregator import MergeOptions, merge_partition
from cloudprof.errors import ConfigError, StorageError
from cloudprof.pprof import sample_totals
from cloudprof.query import NoData, QueryStats, Selection, iter_profiles, query_profile, query_tree
from tests.query import data
from tests.query.data import HOUR, SERVICE

H = timedelta(hours=1)
CLOSED = MergeOptions(now=HOUR + 48 * H)


def merge(store, hour, *, options=CLOSED):
    return merge_partition(store, SERVICE, hour, "cpu", options=options)


def run(store, start, end, **kw):
    stats = QueryStats()
    profile = query_profile(store, Selection(SERVICE, start, end, **kw), stats)
    return sample_totals(profile), stats


def test_whole_merged_hours_read_one_object_each_and_total_exactly(store):
    uploads = []
    for h in range(3):
        uploads += data.put_hour(store, HOUR + h * H, windows=6, seq0=10 * h)
        merge(store, HOUR + h * H)
    totals, stats = run(store, HOUR, HOUR + 3 * H)
    assert totals["cpu/nanoseconds"] == data.total(uploads)
    assert totals["samples/count"] == data.total(uploads, "samples/count")
    assert (stats.hours, stats.hours_merged, stats.hours_raw) == (3, 3, 0)
    assert (stats.merged_read, stats.raw_read, stats.manifests_read) == (3, 0, 3)
    assert stats.objects_read == 6


def test_partial_hours_at_the_edges_use_raw_uploads_by_window_start(store):
    uploads = []
    for h in range(3):
        uploads += data.put_hour(store, HOUR + h * H, windows=6, seq0=10 * h)  # windows at :00 :10 ... :50
        merge(store, HOUR + h * H)
    start, end = HOUR + timedelta(minutes=20), HOUR + 2 * H + timedelta(minutes=30)
    inside = [u for u in uploads if start.timestamp() * 1000 <= u.start_ms < end.timestamp() * 1000]
    assert len(inside) == 4 + 6 + 3
    totals, stats = run(store, start, end)
    assert totals["cpu/nanoseconds"] == data.total(inside)
    assert (stats.hours_merged, stats.hours_raw) == (1, 2)
    assert (stats.merged_read, stats.raw_read) == (1, 7)


def test_an_edge_exactly_on_a_window_start_includes_it_and_the_end_excludes_it(store):
    uploads = data.put_hour(store, HOUR, windows=6)
    start, end = HOUR + timedelta(minutes=10), HOUR + timedelta(minutes=30)
    totals, _ = run(store, start, end)
    assert totals["cpu/nanoseconds"] == data.total(uploads[1:3])


def test_hours_not_merged_and_late_arrivals_are_read_raw_without_double_counting(store):
    merged_hour = data.put_hour(store, HOUR, windows=4)
    merge(store, HOUR)
    late = [data.put_window(store, HOUR + timedelta(minutes=55), seq=90 + i, weight=3) for i in range(2)]
    unmerged = data.put_hour(store, HOUR + H, windows=3, seq0=50)
    totals, stats = run(store, HOUR, HOUR + 2 * H)
    assert totals["cpu/nanoseconds"] == data.total(merged_hour + late + unmerged)
    assert (stats.hours_merged, stats.hours_raw, stats.stragglers) == (1, 1, 2)
    assert stats.raw_read == 2 + 3
    # The aggregator folds the late ones in; the answer does not change and they are no longer read raw.
    merge(store, HOUR)
    merge(store, HOUR + H)
    again, stats = run(store, HOUR, HOUR + 2 * H)
    assert again == totals
    assert (stats.raw_read, stats.merged_read, stats.stragglers) == (0, 2, 0)


def test_an_open_hour_merged_while_filling_then_more_uploads(store):
    first = data.put_hour(store, HOUR, windows=3)
    result = merge(store, HOUR, options=MergeOptions(now=HOUR + timedelta(minutes=35)))
    assert result.open
    more = [data.put_window(store, HOUR + timedelta(minutes=40 + i), seq=20 + i) for i in range(3)]
    totals, stats = run(store, HOUR, HOUR + H)
    assert totals["cpu/nanoseconds"] == data.total(first + more)
    assert (stats.merged_read, stats.raw_read) == (1, 3)


def test_version_filter_over_merged_and_raw(store):
    old = data.put_hour(store, HOUR, windows=4, version="1.0")
    mixed_old = data.put_hour(store, HOUR + H, windows=2, version="1.0", seq0=10)
    mixed_new = [data.put_window(store, HOUR + H + timedelta(minutes=40 + i), seq=30 + i, version="2.0") for i in range(3)]
    merge(store, HOUR)
    merge(store, HOUR + H)
    new_raw = data.put_hour(store, HOUR + 2 * H, windows=2, version="2.0", seq0=40)  # not merged
    totals, stats = run(store, HOUR, HOUR + 3 * H, version="2.0")
    assert totals["cpu/nanoseconds"] == data.total(mixed_new + new_raw)
    assert stats.merged_read == 1  # hour 14's manifest lists only 1.0 inputs: its generation is not read
    totals, _ = run(store, HOUR, HOUR + 3 * H, version="1.0")
    assert totals["cpu/nanoseconds"] == data.total(old + mixed_old)
    tree = query_tree(store, Selection(SERVICE, HOUR, HOUR + 3 * H, version="2.0"))
    names = {s.name for s in tree.function_stats()}
    assert "pricing.slow_rule" in names
    with pytest.raises(NoData, match="version '9.9'"):
        run(store, HOUR, HOUR + 3 * H, version="9.9")


def test_thread_filter(store):
    uploads = data.put_hour(store, HOUR, windows=2) + data.put_hour(store, HOUR + H, windows=2, seq0=10)
    merge(store, HOUR)
    totals, _ = run(store, HOUR, HOUR + 2 * H, thread="worker-1")
    assert totals["samples/count"] == sum(u.threads.get("worker-1", 0) for u in uploads)
    tree = query_tree(store, Selection(SERVICE, HOUR, HOUR + 2 * H, thread="worker-1"))
    assert tree.grand_total(tree.type_index("samples")) == totals["samples/count"]


def test_tree_and_profile_agree(store):
    data.put_hour(store, HOUR, windows=3, version="2.0")
    merge(store, HOUR)
    data.put_hour(store, HOUR + H, windows=2, seq0=10)
    sel = Selection(SERVICE, HOUR, HOUR + timedelta(minutes=90))
    totals = sample_totals(query_profile(store, sel))
    tree = query_tree(store, sel)
    assert {t: tree.grand_total(i) for i, t in enumerate(tree.types)} == totals


def test_empty_range_and_unknown_service_are_clear_errors(local_store):
    data.put_hour(local_store, HOUR, windows=2)
    with pytest.raises(NoData, match=r"no data for service 'checkout' \(cpu\) between 2026-11-25T18:00:00Z"):
        run(local_store, HOUR + 4 * H, HOUR + 5 * H)
    with pytest.raises(NoData, match="'payments' .*has no raw or merged profiles"):
        query_profile(local_store, Selection("payments", HOUR, HOUR + H))
    with pytest.raises(ConfigError, match="empty time range"):
        Selection(SERVICE, HOUR, HOUR)
    with pytest.raises(ConfigError, match="invalid service name"):
        Selection("Bad Name", HOUR, HOUR + H)


def test_cost_grows_with_hours_not_uploads(local_store):
    for h, windows in enumerate((30, 60)):
        data.put_hour(local_store, HOUR + h * H, windows=windows, seq0=100 * h)
        merge(local_store, HOUR + h * H)
    _, stats = run(local_store, HOUR, HOUR + 2 * H)
    assert stats.objects_read == 4  # a manifest and a merged generation per hour
    assert stats.raw_read == 0


def test_bad_raw_uploads_are_skipped_and_counted(local_store):
    good = data.put_hour(local_store, HOUR, windows=2)
    bad_key = good[0].key.replace(".0.pb.gz", ".7.pb.gz")
    local_store.put(bad_key, b"not a profile")
    totals, stats = run(local_store, HOUR, HOUR + timedelta(minutes=59))
    assert totals["cpu/nanoseconds"] == data.total(good)
    assert stats.skipped == 1 and stats.skipped_keys == [bad_key]


def test_many_raw_uploads_of_an_unmerged_hour_are_fetched_concurrently_and_counted_once(store):
    uploads = data.put_hour(store, HOUR, windows=12) + data.put_hour(store, HOUR + H, windows=12, seq0=20)
    stats = QueryStats()
    profiles = list(iter_profiles(store, Selection(SERVICE, HOUR, HOUR + 2 * H), stats, workers=2))
    assert len(profiles) == 24 and stats.raw_read == 24 and stats.hours_raw == 2
    assert sum(sample_totals(p)["cpu/nanoseconds"] for p in profiles) == data.total(uploads)
    # Profiles come in hour order whatever thread fetched them.
    hours = [p.time_nanos // 3_600_000_000_000 for p in profiles]
    assert hours == sorted(hours)


def test_a_corrupt_manifest_is_a_clear_storage_error(local_store):
    data.put_hour(local_store, HOUR, windows=2)
    merge(local_store, HOUR)
    key = f"merged/service={SERVICE}/date=2026-11-25/hour=14/_manifest.json"
    local_store.put(key, b"{not json")
    with pytest.raises(StorageError, match=r"hour=14/_manifest.json: unreadable manifest"):
        run(local_store, HOUR, HOUR + H)


@pytest.mark.slow
def test_queries_during_merges_always_see_each_upload_once(store):
    """An aggregator keeps folding new uploads into an open hour while queries run: every answer must be
    the total of the first k uploads for some k (a double count or a lost upload makes any other sum)."""
    import threading

    open_hour = MergeOptions(now=HOUR + timedelta(minutes=59))
    data.put_window(store, HOUR, seq=0, weight=1)
    merge(store, HOUR, options=open_hour)
    # Known before any upload happens, so a query never races the bookkeeping.
    totals = [data.window_profile(0, weight=i + 1)[1]["cpu/nanoseconds"] for i in range(16)]
    prefix_sums = {sum(totals[:k]) for k in range(1, len(totals) + 1)}
    stop = threading.Event()
    queried = threading.Event()
    errors: list[BaseException] = []

    def aggregator():
        try:
            for i in range(1, 16):
                queried.wait(timeout=5)  # let at least one query start per merge, so they do interleave
                queried.clear()
                data.put_window(store, HOUR + timedelta(minutes=2 * i), seq=i, weight=i + 1)
                merge(store, HOUR, options=open_hour)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            stop.set()

    thread = threading.Thread(target=aggregator)
    thread.start()
    seen = set()
    while not stop.is_set() or not seen:
        queried.set()
        got, _ = run(store, HOUR, HOUR + H)
        assert got["cpu/nanoseconds"] in prefix_sums
        seen.add(got["cpu/nanoseconds"])
    thread.join()
    assert not errors, errors
    final, stats = run(store, HOUR, HOUR + H)
    assert final["cpu/nanoseconds"] == sum(totals) and stats.raw_read == 0
    assert len(seen) > 1  # queries really did interleave with merges
