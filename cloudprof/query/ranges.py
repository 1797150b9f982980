"""`T..T` ranges as the diff command takes them (each end ISO 8601 or relative, as in cloudprof.times)."""

from __future__ import annotations

from datetime import datetime

from cloudprof.errors import ConfigError
from cloudprof.times import parse_time

__all__ = ["parse_range"]


def parse_range(text: str, *, now: datetime | None = None) -> tuple[datetime, datetime]:
    """`2026-11-25T14:00..2026-11-25T15:00`, `-2h..-1h`, `-1h..now` -> (start, end), start before end."""
    start_text, sep, end_text = text.partition("..")
    if not sep or not start_text.strip() or not end_text.strip():
        raise ConfigError(f"bad range {text!r}: write FROM..TO, e.g. 2026-11-25T14:00..2026-11-25T15:00 or -2h..-1h")
    start = parse_time(start_text, now=now)
    end = parse_time(end_text, now=now)
    if not start < end:
        raise ConfigError(f"bad range {text!r}: {start:%Y-%m-%dT%H:%M:%SZ} is not before {end:%Y-%m-%dT%H:%M:%SZ}")
    return start, end
