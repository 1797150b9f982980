"""Parse the times the CLI and the library accept: ISO 8601 or relative."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from cloudprof.errors import ConfigError

__all__ = ["parse_time", "floor_hour", "hours_between"]

_RELATIVE = re.compile(r"^([+-])(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_time(text: str, *, now: datetime | None = None) -> datetime:
    """`2026-11-25T14:00` (UTC unless an offset is given), `now`, `-1h`, `-30m`, `-2d`.

    Returns an aware UTC datetime.
    """
    now = now or datetime.now(timezone.utc)
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        sign, amount, unit = match.groups()
        delta = timedelta(**{_UNITS[unit]: int(amount)})
        return now - delta if sign == "-" else now + delta
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(
            f"bad time {text!r}: use ISO 8601 (2026-11-25T14:00, UTC unless an offset is given) "
            "or a relative time (now, -1h, -30m, -2d)"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def floor_hour(moment: datetime) -> datetime:
    """`moment` in UTC, truncated to its hour; a naive datetime is UTC (never the machine's zone)."""
    if not isinstance(moment, datetime):
        raise ConfigError(f"expected a datetime for the hour, got {moment!r}")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc).replace(minute=0, second=0, microsecond=0)


def hours_between(start: datetime, end: datetime) -> list[datetime]:
    """The UTC hours that overlap [start, end), each as its first instant."""
    hours = []
    hour, end = floor_hour(start), end if end.tzinfo else end.replace(tzinfo=timezone.utc)
    while hour < end:
        hours.append(hour)
        hour += timedelta(hours=1)
    return hours
