"""Build and parse every object key of DESIGN's layout, and refuse the ones that escape it.

    raw/service={svc}/date={YYYY-MM-DD}/hour={HH}/{kind}/{host}.{pid}.{start_ms}.{seq}.pb.gz
    merged/service={svc}/date={YYYY-MM-DD}/hour={HH}/{kind}.pb.gz
    merged/service={svc}/date={YYYY-MM-DD}/hour={HH}/_manifest.json
    quarantine/service={svc}/date={YYYY-MM-DD}/hour={HH}/{kind}/{original name}  (+ .reason.json)
    reports/service={svc}/...

Bad components (service, kind, host, numbers) are `ConfigError`s: they come from
settings. A key string that does not fit the layout is a `StorageError`. Hours
are UTC datetimes on the hour; naive datetimes are taken as UTC.
"""

from __future__ import annotations

import datetime as _dt
import re
from dataclasses import dataclass
from typing import NamedTuple

from cloudprof.errors import ConfigError, StorageError
from cloudprof.times import floor_hour

__all__ = [
    "AREAS",
    "MANIFEST_NAME",
    "Partition",
    "QuarantinedKey",
    "RawKey",
    "manifest_key",
    "merged_key",
    "parse_manifest_key",
    "parse_merged_key",
    "parse_partition",
    "parse_quarantine_key",
    "partition_prefix",
    "quarantine_key",
    "quarantine_reason_key",
    "reports_prefix",
    "sanitize_host",
    "validate_kind",
    "validate_service",
]

AREAS = ("merged", "quarantine", "raw", "reports")
MANIFEST_NAME = "_manifest.json"
RAW_SUFFIX = ".pb.gz"
REASON_SUFFIX = ".reason.json"

# re.ASCII and explicit ranges: no fullwidth digits, no Cyrillic look-alikes, no trailing newline.
_SERVICE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}", re.ASCII)
_KIND = re.compile(r"[a-z][a-z0-9_]{0,31}", re.ASCII)
_HOST = re.compile(r"[A-Za-z0-9-]{1,63}", re.ASCII)
_NOT_HOST = re.compile(r"[^A-Za-z0-9-]", re.ASCII)
_PARTITION = re.compile(
    r"(?P<area>raw|merged|quarantine|reports)/service=(?P<service>[^/]+)/"
    r"date=(?P<date>\d{4}-\d{2}-\d{2})/hour=(?P<hour>\d{2})/(?P<rest>.*)",
    re.ASCII | re.DOTALL,
)
_RAW_NAME = re.compile(r"(?P<host>[A-Za-z0-9-]{1,63})\.(?P<pid>\d{1,10})\.(?P<start_ms>\d{1,15})\.(?P<seq>\d{1,10})\.pb\.gz", re.ASCII)
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._=-]{0,199}", re.ASCII)  # no leading dot: no ".." nor hidden files


def validate_service(name: str) -> str:
    """The service name, or ConfigError: `[a-z0-9][a-z0-9._-]{0,62}`, ASCII only."""
    if not isinstance(name, str) or not _SERVICE.fullmatch(name):
        raise ConfigError(
            f"invalid service name {name!r}: use 1-63 lowercase ASCII letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def validate_kind(kind: str) -> str:
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise ConfigError(f"invalid profile kind {kind!r}: use lowercase ASCII letters, digits and '_' (e.g. 'cpu')")
    return kind


def sanitize_host(name: str) -> str:
    """Host name as it appears in keys: every character outside [A-Za-z0-9-] becomes '-'.

    Dots go too, so a raw file name splits on '.' unambiguously; at most 63 characters.
    """
    cleaned = _NOT_HOST.sub("-", str(name or ""))[:63]
    return cleaned or "unknown"


def _hour_path(hour: _dt.datetime) -> str:
    return f"date={hour:%Y-%m-%d}/hour={hour:%H}/"


def _nonneg(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"invalid {name} {value!r}: a non-negative integer")
    return value


@dataclass(frozen=True, slots=True)
class RawKey:
    """One uploaded profile: `raw/service=.../date=.../hour=.../{kind}/{host}.{pid}.{start_ms}.{seq}.pb.gz`.

    `hour` is normalised to the UTC hour; `start_ms` (the window start, epoch ms)
    must fall inside it, because the agent cuts windows at hour boundaries.
    """

    service: str
    hour: _dt.datetime
    kind: str
    host: str
    pid: int
    start_ms: int
    seq: int

    def __post_init__(self) -> None:
        validate_service(self.service)
        validate_kind(self.kind)
        if not isinstance(self.host, str) or not _HOST.fullmatch(self.host):
            raise ConfigError(f"invalid host {self.host!r} in a key: pass it through sanitize_host() first")
        _nonneg("pid", self.pid)
        _nonneg("start_ms", self.start_ms)
        _nonneg("seq", self.seq)
        hour = floor_hour(self.hour)
        object.__setattr__(self, "hour", hour)
        start = _dt.datetime.fromtimestamp(self.start_ms / 1000, tz=_dt.timezone.utc)
        if floor_hour(start) != hour:
            raise ConfigError(f"start_ms {self.start_ms} ({start:%Y-%m-%dT%H:%M:%S}Z) is outside hour {hour:%Y-%m-%dT%H}")

    @classmethod
    def for_window(cls, service: str, kind: str, host: str, pid: int, start_ms: int, seq: int) -> "RawKey":
        """The key of a window starting at `start_ms`; the hour follows from it, the host is sanitised."""
        _nonneg("start_ms", start_ms)
        hour = _dt.datetime.fromtimestamp(start_ms / 1000, tz=_dt.timezone.utc)
        return cls(service, hour, kind, sanitize_host(host), pid, start_ms, seq)

    @property
    def name(self) -> str:
        return f"{self.host}.{self.pid}.{self.start_ms}.{self.seq}{RAW_SUFFIX}"

    def build(self) -> str:
        return f"raw/service={self.service}/{_hour_path(self.hour)}{self.kind}/{self.name}"

    def __str__(self) -> str:
        return self.build()

    @classmethod
    def parse(cls, key: str) -> "RawKey":
        """The RawKey that `key` spells, or StorageError; `parse(k).build() == k` always holds."""
        part = parse_partition(key)
        kind, _, name = part.rest.partition("/")
        found = _RAW_NAME.fullmatch(name)
        if part.area != "raw" or not found or not _KIND.fullmatch(kind):
            raise StorageError(f"not a raw profile key: {key!r}")
        try:
            raw = cls(part.service, part.hour, kind, found["host"], int(found["pid"]), int(found["start_ms"]), int(found["seq"]))
        except ConfigError as exc:
            raise StorageError(f"not a raw profile key: {key!r} ({exc})") from None
        if raw.build() != key:  # e.g. leading zeros: one spelling per key, or idempotence breaks
            raise StorageError(f"not a raw profile key: {key!r} (non-canonical spelling)")
        return raw


class Partition(NamedTuple):
    """The Hive-style head of a key: area, service, hour; `rest` is what follows."""

    area: str
    service: str
    hour: _dt.datetime
    rest: str


def parse_partition(key: str) -> Partition:
    """Split `{area}/service=.../date=.../hour=.../rest` or raise StorageError."""
    found = _PARTITION.fullmatch(key) if isinstance(key, str) else None
    if not found:
        raise StorageError(f"key {key!r} is not inside a service=/date=/hour= partition")
    try:
        validate_service(found["service"])
        day = _dt.date.fromisoformat(found["date"])
        hour = _dt.datetime(day.year, day.month, day.day, int(found["hour"]), tzinfo=_dt.timezone.utc)
    except (ConfigError, ValueError) as exc:
        raise StorageError(f"key {key!r} has a bad partition: {exc}") from None
    return Partition(found["area"], found["service"], hour, found["rest"])


def partition_prefix(
    service: str,
    hour: _dt.datetime | None = None,
    *,
    area: str = "raw",
    kind: str | None = None,
    day: _dt.date | None = None,
) -> str:
    """The listing prefix of a service (`hour=None`), a day (`day=`), an hour, or an hour's kind (raw, quarantine)."""
    validate_service(service)
    if area not in AREAS:
        raise ConfigError(f"unknown key area {area!r}: one of {', '.join(AREAS)}")
    prefix = f"{area}/service={service}/"
    if hour is None:
        if kind is not None:
            raise ConfigError("partition_prefix: kind needs an hour")
        return prefix + (f"date={day:%Y-%m-%d}/" if day is not None else "")
    prefix += _hour_path(floor_hour(hour))
    if kind is not None:
        if area not in ("raw", "quarantine"):
            raise ConfigError(f"partition_prefix: {area} keys have no kind folder")
        prefix += validate_kind(kind) + "/"
    return prefix


def merged_key(service: str, hour: _dt.datetime, kind: str) -> str:
    return partition_prefix(service, hour, area="merged") + f"{validate_kind(kind)}.pb.gz"


def parse_merged_key(key: str) -> tuple[str, _dt.datetime, str]:
    """(service, hour, kind) of a merged profile key, or StorageError."""
    part = parse_partition(key)
    kind = part.rest[: -len(".pb.gz")] if part.rest.endswith(".pb.gz") else ""
    if part.area != "merged" or not _KIND.fullmatch(kind):
        raise StorageError(f"not a merged profile key: {key!r}")
    return part.service, part.hour, kind


def manifest_key(service: str, hour: _dt.datetime) -> str:
    return partition_prefix(service, hour, area="merged") + MANIFEST_NAME


def parse_manifest_key(key: str) -> tuple[str, _dt.datetime]:
    """(service, hour) of a manifest key, or StorageError."""
    part = parse_partition(key)
    if part.area != "merged" or part.rest != MANIFEST_NAME:
        raise StorageError(f"not a manifest key: {key!r}")
    return part.service, part.hour


def quarantine_key(raw_key: "str | RawKey") -> str:
    """Where a bad raw object goes: same partition and kind under quarantine/, same file name.

    Accepts any key under a raw partition's kind folder (a junk file is quarantined too),
    as long as its name is a single safe segment.
    """
    key = raw_key.build() if isinstance(raw_key, RawKey) else raw_key
    part = parse_partition(key)
    kind, _, name = part.rest.partition("/")
    if part.area != "raw" or not _KIND.fullmatch(kind) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise StorageError(f"cannot quarantine {key!r}: not a file in a raw/service=.../{{kind}}/ folder")
    return partition_prefix(part.service, part.hour, area="quarantine", kind=kind) + name


def quarantine_reason_key(raw_key: "str | RawKey") -> str:
    return quarantine_key(raw_key) + REASON_SUFFIX


class QuarantinedKey(NamedTuple):
    service: str
    hour: _dt.datetime
    kind: str
    name: str  # the original raw file name
    is_reason: bool  # the .reason.json beside it

    @property
    def raw_key(self) -> str:
        """Where the object came from (under raw/)."""
        return partition_prefix(self.service, self.hour, kind=self.kind) + self.name


def parse_quarantine_key(key: str) -> QuarantinedKey:
    """The parts of a quarantined object's (or its reason's) key, or StorageError."""
    part = parse_partition(key)
    kind, _, name = part.rest.partition("/")
    is_reason = name.endswith(REASON_SUFFIX)
    if is_reason:
        name = name[: -len(REASON_SUFFIX)]
    if part.area != "quarantine" or not _KIND.fullmatch(kind) or not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise StorageError(f"not a quarantine key: {key!r}")
    return QuarantinedKey(part.service, part.hour, kind, name, is_reason)


def reports_prefix(service: str) -> str:
    return f"reports/service={validate_service(service)}/"
