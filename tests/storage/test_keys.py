"""Every key of DESIGN's layout round-trips, and nothing can climb out of its prefix."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudprof.errors import ConfigError, StorageError
from cloudprof.storage import keys
from cloudprof.storage.base import check_key
from cloudprof.storage.keys import RawKey
from cloudprof.times import floor_hour, hours_between

HOUR = dt.datetime(2026, 11, 25, 14, tzinfo=dt.timezone.utc)
START_MS = int(HOUR.timestamp() * 1000) + 123_456


def test_raw_key_layout_and_round_trip():
    raw = RawKey("checkout", HOUR, "cpu", "web-1", 4242, START_MS, 7)
    key = raw.build()
    assert key == f"raw/service=checkout/date=2026-11-25/hour=14/cpu/web-1.4242.{START_MS}.7.pb.gz"
    assert RawKey.parse(key) == raw
    assert str(raw) == key
    check_key(key)


def test_for_window_derives_the_hour_and_sanitises_the_host():
    raw = RawKey.for_window("checkout", "cpu", "ip-10-0-0-1.ec2.internal", 1, START_MS, 0)
    assert raw.hour == HOUR and raw.host == "ip-10-0-0-1-ec2-internal"
    assert RawKey.parse(raw.build()) == raw


def test_hour_is_normalised_to_utc():
    plus_two = dt.timezone(dt.timedelta(hours=2))
    raw = RawKey("s", dt.datetime(2026, 11, 25, 16, 30, tzinfo=plus_two), "cpu", "h", 1, START_MS, 0)
    assert raw.hour == HOUR
    naive = RawKey("s", dt.datetime(2026, 11, 25, 14, 59), "cpu", "h", 1, START_MS, 0)
    assert naive.hour == HOUR


def test_window_must_start_inside_its_hour():
    with pytest.raises(ConfigError, match="outside hour"):
        RawKey("s", HOUR, "cpu", "h", 1, START_MS + 3_600_000, 0)


def test_merged_manifest_quarantine_reports():
    raw = RawKey("checkout", HOUR, "cpu", "web-1", 1, START_MS, 0)
    assert keys.merged_key("checkout", HOUR, "cpu") == "merged/service=checkout/date=2026-11-25/hour=14/cpu.pb.gz"
    assert keys.parse_merged_key(keys.merged_key("checkout", HOUR, "cpu")) == ("checkout", HOUR, "cpu")
    assert keys.manifest_key("checkout", HOUR) == "merged/service=checkout/date=2026-11-25/hour=14/_manifest.json"
    assert keys.quarantine_key(raw) == f"quarantine/service=checkout/date=2026-11-25/hour=14/cpu/{raw.name}"
    assert keys.quarantine_key(raw.build()) == keys.quarantine_key(raw)
    assert keys.quarantine_reason_key(raw) == keys.quarantine_key(raw) + ".reason.json"
    junk = "raw/service=checkout/date=2026-11-25/hour=14/cpu/notes.txt"
    assert keys.quarantine_key(junk) == "quarantine/service=checkout/date=2026-11-25/hour=14/cpu/notes.txt"
    assert keys.reports_prefix("checkout") == "reports/service=checkout/"
    assert keys.parse_manifest_key(keys.manifest_key("checkout", HOUR)) == ("checkout", HOUR)
    q = keys.parse_quarantine_key(keys.quarantine_key(raw))
    assert (q.service, q.hour, q.kind, q.name, q.is_reason) == ("checkout", HOUR, "cpu", raw.name, False)
    assert q.raw_key == raw.build()
    assert keys.parse_quarantine_key(keys.quarantine_reason_key(raw)).is_reason
    assert keys.parse_quarantine_key(keys.quarantine_reason_key(raw)).raw_key == raw.build()
    for wrong in (raw.build(), keys.merged_key("checkout", HOUR, "cpu"), "quarantine/service=checkout/x"):
        with pytest.raises(StorageError):
            keys.parse_quarantine_key(wrong)
    with pytest.raises(StorageError):
        keys.parse_manifest_key(keys.merged_key("checkout", HOUR, "cpu"))


def test_partition_prefixes():
    assert keys.partition_prefix("svc") == "raw/service=svc/"
    assert keys.partition_prefix("svc", day=HOUR.date()) == "raw/service=svc/date=2026-11-25/"
    assert keys.partition_prefix("svc", HOUR) == "raw/service=svc/date=2026-11-25/hour=14/"
    assert keys.partition_prefix("svc", HOUR, kind="cpu") == "raw/service=svc/date=2026-11-25/hour=14/cpu/"
    assert keys.partition_prefix("svc", HOUR, area="merged") == "merged/service=svc/date=2026-11-25/hour=14/"
    with pytest.raises(ConfigError):
        keys.partition_prefix("svc", HOUR, area="merged", kind="cpu")
    with pytest.raises(ConfigError):
        keys.partition_prefix("svc", area="../etc")
    part = keys.parse_partition(keys.merged_key("svc", HOUR, "cpu"))
    assert (part.area, part.service, part.hour, part.rest) == ("merged", "svc", HOUR, "cpu.pb.gz")


def test_hours_in_a_range():
    hours = hours_between(HOUR + dt.timedelta(minutes=30), HOUR + dt.timedelta(hours=2, minutes=1))
    assert hours == [HOUR, HOUR + dt.timedelta(hours=1), HOUR + dt.timedelta(hours=2)]
    assert hours_between(HOUR, HOUR) == []


def test_a_naive_hour_is_utc_not_the_machines_zone():
    naive = dt.datetime(2026, 11, 25, 14, 30)
    assert floor_hour(naive) == dt.datetime(2026, 11, 25, 14, tzinfo=dt.timezone.utc)
    assert hours_between(naive, naive.replace(hour=15, minute=1)) == [floor_hour(naive), floor_hour(naive) + dt.timedelta(hours=1)]
    with pytest.raises(ConfigError):
        floor_hour("2026-11-25T14")


@pytest.mark.parametrize("name", ["checkout", "a", "0svc", "svc.v2", "my_svc-1", "a" * 63])
def test_good_service_names(name):
    assert keys.validate_service(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "", "Checkout", "-svc", ".svc", "_svc", "..", "../etc", "svc/../../x", "a/b", "a\\b", "svc\x00",
        "svc\n", "svc ", " svc", "a" * 64, "caf\u00e9", "\u0441heckout",  # Cyrillic 'с' that looks Latin
        "\uff43heckout",  # fullwidth 'ｃ'
        "svc\u200b",  # zero-width space
        "svc\u202e",  # right-to-left override
        "\u2024\u2024",  # one-dot leaders, which some systems fold to ".."
        "svc=x", "svc%2f", None, 42,
    ],
    ids=repr,
)
def test_bad_service_names_are_refused(name):
    with pytest.raises(ConfigError, match="invalid service name"):
        keys.validate_service(name)
    with pytest.raises(ConfigError):
        RawKey(name, HOUR, "cpu", "h", 1, START_MS, 0)


@pytest.mark.parametrize("kind", ["", "CPU", "../cpu", "cpu/x", "cpu.pb", "1cpu", "c\u0440u"])
def test_bad_kinds_are_refused(kind):
    with pytest.raises(ConfigError):
        RawKey("svc", HOUR, kind, "h", 1, START_MS, 0)


@pytest.mark.parametrize("host", ["", "a.b", "a/b", "..", "h\x00", "h\u00e9", "a" * 64])
def test_unsanitised_hosts_are_refused(host):
    with pytest.raises(ConfigError):
        RawKey("svc", HOUR, "cpu", host, 1, START_MS, 0)


@pytest.mark.parametrize(
    "host,clean",
    [
        ("web-1", "web-1"), ("ip-10-0-0-1.ec2.internal", "ip-10-0-0-1-ec2-internal"), ("../../etc", "------etc"),
        ("h\u00f6st", "h-st"), ("a/b\\c\x00d", "a-b-c-d"), ("", "unknown"), ("x" * 100, "x" * 63),
    ],
)
def test_sanitize_host(host, clean):
    assert keys.sanitize_host(host) == clean


@pytest.mark.parametrize("number", [-1, 1.5, True, "1"])
def test_numbers_must_be_non_negative_ints(number):
    with pytest.raises(ConfigError):
        RawKey("svc", HOUR, "cpu", "h", number, START_MS, 0)
    with pytest.raises(ConfigError):
        RawKey("svc", HOUR, "cpu", "h", 1, START_MS, number)


@pytest.mark.parametrize(
    "key",
    [
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h.1.{ms}.0.pb",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h.1.{ms}.0.pb.gz/extra",
        "raw/service=svc/date=2026-11-25/hour=14/../cpu/h.1.{ms}.0.pb.gz",
        "raw/service=../date=2026-11-25/hour=14/cpu/h.1.{ms}.0.pb.gz",
        "raw/service=Svc/date=2026-11-25/hour=14/cpu/h.1.{ms}.0.pb.gz",
        "raw/service=svc/date=2026-13-25/hour=14/cpu/h.1.{ms}.0.pb.gz",
        "raw/service=svc/date=2026-11-25/hour=24/cpu/h.1.{ms}.0.pb.gz",
        "raw/service=svc/date=2026-11-25/hour=15/cpu/h.1.{ms}.0.pb.gz",  # start outside the hour
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h.01.{ms}.0.pb.gz",  # non-canonical
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h.x.1.{ms}.0.pb.gz",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h\u00e9.1.{ms}.0.pb.gz",
        "merged/service=svc/date=2026-11-25/hour=14/cpu.pb.gz",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/h.1.{ms}.0.pb.gz\n",
        "",
    ],
)
def test_parse_refuses_keys_outside_the_layout(key):
    with pytest.raises(StorageError):
        RawKey.parse(key.format(ms=START_MS))


@pytest.mark.parametrize(
    "key",
    [
        "raw/service=svc/date=2026-11-25/hour=14/cpu/../../x",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/..",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/a/b",
        "raw/service=svc/date=2026-11-25/hour=14/cpu/.hidden",
        "merged/service=svc/date=2026-11-25/hour=14/cpu/x.pb.gz",
    ],
)
def test_quarantine_refuses_escapes(key):
    with pytest.raises(StorageError):
        keys.quarantine_key(key)


def _one_line(s: str) -> bool:
    return "\n" not in s


# Named predicates, not lambdas: describing a lambda makes hypothesis ast.parse its source file, which
# trips CPython 3.11's "AST constructor recursion depth mismatch" (gh-106905) when threads are running.
services = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,62}", fullmatch=True).filter(_one_line)
hosts = st.text(min_size=0, max_size=80)
start_ms = st.integers(min_value=0, max_value=4_102_444_800_000)  # up to 2100


@settings(max_examples=150, deadline=None)
@given(service=services, host=hosts, pid=st.integers(0, 2**31), ms=start_ms, seq=st.integers(0, 10**9),
       kind=st.sampled_from(["cpu", "alloc", "wall_time"]))
def test_raw_keys_round_trip(service, host, pid, ms, seq, kind):
    raw = RawKey.for_window(service, kind, host, pid, ms, seq)
    key = raw.build()
    assert RawKey.parse(key) == raw
    check_key(key)  # every store accepts it
    assert key.startswith(keys.partition_prefix(service, raw.hour, kind=kind))
    assert keys.quarantine_key(key).startswith(keys.partition_prefix(service, raw.hour, area="quarantine"))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=70))
def test_any_accepted_service_is_one_safe_segment(name):
    try:
        keys.validate_service(name)
    except ConfigError:
        return
    assert "/" not in name and name not in (".", "..") and name.isascii() and name == name.strip()
