"""Text tables and range parsing: table tests with ids."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from cloudprof.errors import ConfigError
from cloudprof.query import parse_range
from cloudprof.render import format_value

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=timezone.utc)


@pytest.mark.parametrize("value,unit,text", [
    (0, "nanoseconds", "0"),
    (1_500_000_000, "nanoseconds", "1.50s"),
    (2_500_000, "nanoseconds", "2.5ms"),
    (750, "nanoseconds", "1us"),
    (1234567, "count", "1,234,567"),
    (512, "bytes", "512B"),
    (3 * 1024 * 1024, "bytes", "3.0MiB"),
], ids=["zero", "seconds", "millis", "micros", "count", "bytes", "mebibytes"])
def test_format_value(value, unit, text):
    assert format_value(value, unit) == text


@pytest.mark.parametrize("text,start,end", [
    ("2026-11-25T14:00..2026-11-25T15:00", datetime(2026, 11, 25, 14, tzinfo=timezone.utc), datetime(2026, 11, 25, 15, tzinfo=timezone.utc)),
    ("-2h..-1h", datetime(2026, 11, 25, 13, 30, tzinfo=timezone.utc), datetime(2026, 11, 25, 14, 30, tzinfo=timezone.utc)),
    ("-30m..now", datetime(2026, 11, 25, 15, 0, tzinfo=timezone.utc), NOW),
    ("2026-11-25T16:00+02:00..now", datetime(2026, 11, 25, 14, tzinfo=timezone.utc), NOW),
], ids=["iso", "relative", "to-now", "offset"])
def test_parse_range(text, start, end):
    assert parse_range(text, now=NOW) == (start, end)


@pytest.mark.parametrize("text,message", [
    ("2026-11-25T14:00", "write FROM..TO"),
    ("..now", "write FROM..TO"),
    ("now..-1h", "is not before"),
    ("yesterday..now", "bad time"),
], ids=["one-end", "no-start", "backwards", "words"])
def test_parse_range_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_range(text, now=NOW)
