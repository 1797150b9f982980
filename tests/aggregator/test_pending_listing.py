"""What --pending and the scheduled handlers list: folders first, then only the objects of candidate hours."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from cloudprof.aggregator import list_partitions, pending
from cloudprof.aggregator.handlers import common
from cloudprof.aggregator.partition import Partition, partition_of_key
from cloudprof.storage import keys
from tests.aggregator import rawgen

H0 = rawgen.HOUR  # 2026-11-25T14
HOURS = [H0 - timedelta(hours=i) for i in range(4, -1, -1)]  # 10:00 .. 14:00, one day
SERVICES = ("billing", "checkout", "search")
STRAYS = [
    "raw/README.txt",
    "raw/service=Bad Name/date=2026-11-25/hour=14/cpu/x.pb.gz",
    "raw/service=checkout/notes.txt",
    "raw/service=checkout/date=2026-11-25/notes.txt",
    "raw/service=checkout/date=2026-11-25/hour=14/CPU/x.pb.gz",
    "raw/service=search/date=2026-11-25/hour=13/cpu/notes.txt",  # junk in a real partition: quarantined
]


class CountingStore:
    """A store that records what is listed: the prefixes asked for and every key a listing returned."""

    def __init__(self, store) -> None:
        self._store = store
        self.lists: list[str] = []
        self.folder_lists: list[str] = []
        self.listed: list[str] = []

    def __getattr__(self, name):
        return getattr(self._store, name)

    def list(self, prefix: str = "", **kwargs):
        self.lists.append(prefix)
        for info in self._store.list(prefix, **kwargs):
            self.listed.append(info.key)
            yield info

    def prefixes(self, prefix: str = "", **kwargs):
        self.folder_lists.append(prefix)
        return self._store.prefixes(prefix, **kwargs)


def _full_scan(store, service=None, hours=None) -> dict[Partition, set[str]]:
    """What list_partitions found when it listed every object under raw/ (the rules it still applies)."""
    wanted = {h.replace(minute=0, second=0, microsecond=0) for h in hours} if hours else None
    found: dict[Partition, set[str]] = {}
    for info in store.list("raw/"):
        part = partition_of_key(info.key) or pending._partition_of_folder(info.key)
        if part is None or (wanted is not None and part.hour not in wanted) or (service and part.service != service):
            continue
        found.setdefault(part, set()).add(info.key)
    return found


@pytest.fixture
def fleet(shared_store):
    """Three services with two uploads in each of five hours, plus files the agent never writes."""
    _, store = shared_store
    raw = {}
    for service in SERVICES:
        for hour in HOURS:
            raw[Partition(service, hour, "cpu")] = [u.key for u in rawgen.put_many(store, 2, service, hour=hour)]
    for key in STRAYS:
        store.put(key, b"stray")
    return store, raw


def test_the_scheduled_scan_lists_only_the_hours_it_looks_at(fleet):
    store, raw = fleet
    window = HOURS[-3:]  # what run_pending looks at with a 3 hour lookback
    counted = CountingStore(store)
    found = pending.find_pending(counted, hours=window, now=H0 + timedelta(hours=2))
    assert found == sorted(p for p in raw if p.hour in window)
    assert counted.folder_lists == ["raw/"]  # services from their folders, nothing else walked
    assert sorted(counted.lists) == sorted(keys.partition_prefix(s, h) for s in SERVICES for h in window)
    in_window = {k for p, ks in raw.items() if p.hour in window for k in ks} | set(STRAYS[-2:])
    assert set(counted.listed) == in_window
    assert len(counted.listed) == len(in_window) == 20  # of 36 objects under raw/

    # The whole scheduled run (find, merge, tidy) reads no raw object of another hour either.
    counted = CountingStore(store)
    report = common.run_pending(counted, H0 + timedelta(minutes=30), 3)
    assert (report.failures, report.merged, report.quarantined) == ([], 18, 1)
    out_of_window = {k for p, ks in raw.items() if p.hour not in window for k in ks}
    assert not out_of_window & set(counted.listed)
    hour_folders = tuple(keys.partition_prefix(s, h) for s in SERVICES for h in window)
    assert all(p.startswith(hour_folders) for p in counted.lists if p.startswith("raw/"))


def test_a_long_range_walks_the_date_and_hour_folders(fleet):
    store, raw = fleet
    month = [H0 - timedelta(hours=i) for i in range(24 * 30)]
    counted = CountingStore(store)
    parts = list_partitions(counted, service="checkout", hours=month)
    assert parts == {p: set(ks) for p, ks in raw.items() if p.service == "checkout"}
    # One folder listing for the service's dates, one for the only date that has hours; no blind listings.
    assert counted.folder_lists == ["raw/service=checkout/", "raw/service=checkout/date=2026-11-25/"]
    assert counted.lists == [keys.partition_prefix("checkout", h) for h in HOURS]


@pytest.mark.parametrize(
    "service, hours",
    [(None, None), ("checkout", None), (None, HOURS[-3:]), ("search", HOURS[1:3]), (None, HOURS + [H0 + timedelta(days=9)]),
     (None, [H0 - timedelta(hours=i) for i in range(48)]), ("billing", [datetime(2020, 1, 1, tzinfo=H0.tzinfo)])],
    ids=["all", "service", "hours", "service-hours", "hours-with-gap", "two-days", "nothing-there"],
)
def test_listing_folders_finds_what_a_full_scan_finds(fleet, service, hours):
    store, _ = fleet
    counted = CountingStore(store)
    assert list_partitions(counted, service=service, hours=hours) == _full_scan(store, service, hours)
    # Folders that are not a valid service are never listed: nothing under them can be merged.
    assert not [p for p in counted.lists + counted.folder_lists if "Bad Name" in p]
    if hours is None and service is None:
        assert counted.lists == [f"raw/service={s}/" for s in SERVICES]
