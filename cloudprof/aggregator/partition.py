"""A partition is one (service, hour, kind): the unit the aggregator merges exactly once.

Key layout comes from cloudprof.storage.keys; this module names partitions and
says whether an hour may still receive uploads.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cloudprof.storage import keys as _keys
from cloudprof.times import floor_hour

__all__ = ["KIND_SAMPLE_TYPES", "Partition", "hour_is_open", "partition_of_key"]

# Sample types (type, unit) a raw input of each kind must carry, in order, and its period type.
KIND_SAMPLE_TYPES: dict[str, tuple[tuple[tuple[str, str], ...], tuple[str, str]]] = {
    "cpu": ((("samples", "count"), ("cpu", "nanoseconds"), ("wall", "nanoseconds")), ("cpu", "nanoseconds")),
    "memory": ((("alloc_objects", "count"), ("alloc_space", "bytes")), ("space", "bytes")),
}

# Uploads of an hour keep arriving a little after it ends (upload interval, retries, spool).
DEFAULT_GRACE = timedelta(minutes=15)


@dataclass(frozen=True, slots=True, order=True)
class Partition:
    service: str
    hour: datetime  # aware UTC, first instant of the hour
    kind: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "hour", floor_hour(self.hour))

    @property
    def raw_prefix(self) -> str:
        return _keys.partition_prefix(self.service, self.hour, kind=self.kind)

    @property
    def merged_key(self) -> str:
        return _keys.merged_key(self.service, self.hour, self.kind)

    @property
    def manifest_key(self) -> str:
        return _keys.manifest_key(self.service, self.hour)

    @property
    def merged_prefix(self) -> str:
        """Folder of the hour's merged objects (manifest, merged kinds, generations, shards)."""
        return self.manifest_key.rsplit("/", 1)[0] + "/"

    @property
    def objects_prefix(self) -> str:
        """Content-addressed merged generations; the manifest names the current one."""
        return f"{self.merged_prefix}_objects/{self.kind}-"

    @property
    def shards_prefix(self) -> str:
        return f"{self.merged_prefix}_shards/{self.kind}/"

    @property
    def quarantine_prefix(self) -> str:
        return _keys.partition_prefix(self.service, self.hour, area="quarantine", kind=self.kind)

    def label(self) -> str:
        return f"{self.service} {self.hour:%Y-%m-%dT%H} {self.kind}"

    def to_dict(self) -> dict[str, str]:
        return {"service": self.service, "hour": self.hour.strftime("%Y-%m-%dT%H"), "kind": self.kind}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> "Partition":
        hour = datetime.strptime(data["hour"], "%Y-%m-%dT%H").replace(tzinfo=timezone.utc)
        return cls(data["service"], hour, data["kind"])


def partition_of_key(key: str) -> Partition | None:
    """The partition a raw key's path names, or None for a key that is not a raw upload."""
    try:
        raw = _keys.RawKey.parse(key)
    except Exception:  # noqa: BLE001 - any unparsable key is simply "not a raw upload"
        return None
    return Partition(raw.service, raw.hour, raw.kind)


def hour_is_open(hour: datetime, *, now: datetime | None = None, grace: timedelta = DEFAULT_GRACE) -> bool:
    now = now or datetime.now(timezone.utc)
    return now < floor_hour(hour) + timedelta(hours=1) + grace
