"""Turn one raw upload into a profile fit to merge into its partition, or say why not.

Checks are ordered cheapest first; every failure is a `Rejected` with a Reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from operator import add as _add
from typing import Callable

from cloudprof.aggregator.partition import KIND_SAMPLE_TYPES, Partition
from cloudprof.aggregator.quarantine import Reason, Rejected
from cloudprof.errors import ProfileError, StorageError
from cloudprof.pprof import GZIP_MAGIC, Profile, decode, gunzip
from cloudprof.storage import keys as _keys

__all__ = ["Limits", "LoadedInput", "check_key", "load_input"]

_RAW_NAME = re.compile(r"[A-Za-z0-9-]{1,63}\.\d{1,10}\.(?P<start_ms>\d{1,15})\.\d{1,10}\.pb\.gz", re.ASCII)


@dataclass(frozen=True, slots=True)
class Limits:
    """What one raw upload may weigh. An agent window of 60 s is a few hundred KiB at most."""

    max_object_bytes: int = 32 << 20
    max_decoded_bytes: int = 64 << 20
    max_strings: int = 1 << 18


@dataclass(slots=True)
class LoadedInput:
    profile: Profile
    version: str
    totals: dict[str, int]


def check_key(key: str, part: Partition) -> None:
    """Raise Rejected unless `key` is a well-formed raw key of `part` (name and window start)."""
    try:
        raw = _keys.RawKey.parse(key)
    except StorageError as exc:
        name = key.rsplit("/", 1)[-1]
        found = _RAW_NAME.fullmatch(name)
        if found and key.startswith(part.raw_prefix):
            start = int(found["start_ms"])
            if not _in_hour(start, part):
                raise Rejected(Reason.WRONG_PARTITION, f"window start {start} ms is outside hour {part.hour:%Y-%m-%dT%H}") from None
        raise Rejected(Reason.BAD_KEY, str(exc)) from None
    found = Partition(raw.service, raw.hour, raw.kind)
    if found != part:
        raise Rejected(Reason.WRONG_PARTITION, f"key names {found.label()}, listed under {part.label()}")
    if not _in_hour(raw.start_ms, part):
        raise Rejected(Reason.WRONG_PARTITION, f"window start {raw.start_ms} ms is outside hour {part.hour:%Y-%m-%dT%H}")


def _in_hour(start_ms: int, part: Partition) -> bool:
    first = int(part.hour.timestamp()) * 1000
    return first <= start_ms < first + 3_600_000


def _gunzip(data: bytes, limit: int) -> bytes:
    """pprof's capped gunzip, its errors sorted into BAD_GZIP and TOO_LARGE (the cap's message says "too large")."""
    try:
        return gunzip(data, limit, ignore_trailing=True)
    except ProfileError as exc:
        reason = Reason.TOO_LARGE if str(exc).startswith("profile too large") else Reason.BAD_GZIP
        raise Rejected(reason, str(exc)) from None


class _Table:
    """The few strings the checks read, decoded on demand (decoding the whole table costs more than the checks)."""

    __slots__ = ("raw",)

    def __init__(self, raw) -> None:
        self.raw = raw

    def __getitem__(self, index: int) -> str:
        if not 0 <= index < len(self.raw):
            return f"#{index}?"
        return self.raw[index].decode("utf-8", "replace")


def _comments(profile: Profile, table: _Table) -> dict[str, str]:
    found = {}
    for index in profile.comment:
        key, sep, value = table[index].partition("=")
        if sep:
            found.setdefault(key.strip(), value.strip())
    return found


def load_input(data: bytes, part: Partition, *, limits: Limits = Limits(),
               metadata: "dict[str, str] | Callable[[], dict[str, str]] | None" = None) -> LoadedInput:
    """Decode, validate and fit-check one raw upload; tag its samples with `version`.

    The version comes from the profile's `version=` comment, else from the object
    metadata: a dict, or a callable that fetches it (listings carry no metadata, so
    the aggregator pays for a HEAD only when the comment is missing).
    """
    if not data:
        raise Rejected(Reason.EMPTY, "zero bytes")
    if len(data) > limits.max_object_bytes:
        raise Rejected(Reason.TOO_LARGE, f"{len(data)} bytes, over the {limits.max_object_bytes} limit")
    if not data.startswith(GZIP_MAGIC):
        raise Rejected(Reason.NOT_GZIP, f"does not start with the gzip magic 1f 8b (starts {data[:4].hex(' ')})")
    plain = _gunzip(data, limits.max_decoded_bytes)
    try:
        profile = decode(plain, max_size=limits.max_decoded_bytes)
    except ProfileError as exc:
        raise Rejected(Reason.INVALID_PROFILE, str(exc)) from None
    if len(profile.string_table) > limits.max_strings:
        raise Rejected(Reason.TOO_MANY_STRINGS, f"{len(profile.string_table)} strings, over the {limits.max_strings} limit")
    table = _Table(profile.string_table)
    expected_types, expected_period = KIND_SAMPLE_TYPES.get(part.kind, ((), ("", "")))
    if not expected_types:
        raise Rejected(Reason.WRONG_SAMPLE_TYPES, f"unknown kind {part.kind!r}: known kinds are {sorted(KIND_SAMPLE_TYPES)}")
    found_types = tuple((table[st.type], table[st.unit]) for st in profile.sample_type)
    if found_types != expected_types:
        raise Rejected(
            Reason.WRONG_SAMPLE_TYPES,
            f"sample types {_fmt(found_types)} do not fit kind {part.kind!r} ({_fmt(expected_types)})",
        )
    period = (table[profile.period_type.type], table[profile.period_type.unit])
    if period != expected_period:
        raise Rejected(Reason.WRONG_SAMPLE_TYPES, f"period type {_fmt((period,))} does not fit kind {part.kind!r} ({_fmt((expected_period,))})")
    comments = _comments(profile, table)
    service = comments.get("service")
    if service and service != part.service:
        raise Rejected(Reason.WRONG_PARTITION, f"profile says service={service}, key says {part.service}")
    if profile.time_nanos:
        start = int(part.hour.timestamp()) * 1_000_000_000
        if not start <= profile.time_nanos < start + 3_600_000_000_000:
            raise Rejected(Reason.WRONG_PARTITION, f"profile time_nanos {profile.time_nanos} is outside hour {part.hour:%Y-%m-%dT%H}")
    version = comments.get("version", "")
    if not version and metadata is not None:
        version = (metadata() if callable(metadata) else metadata).get("version", "")
    totals = _tag_and_total(profile, table, version, [f"{t}/{u}" for t, u in found_types])
    # Per-upload comments (host, pid, agent counters) would pile up by the thousand in an hour's
    # merge; the manifest keeps who sent what, and finish() stamps the merged profile's own comments.
    del profile.comment[:]
    return LoadedInput(profile, version, totals)


def _fmt(types) -> str:
    return ", ".join(f"{t}/{u}" for t, u in types) or "none"


def _tag_and_total(profile: Profile, table: _Table, version: str, names: list[str]) -> dict[str, int]:
    """Sum each sample type and add label version=<version> to samples that lack one (one pass)."""
    sums = [0] * len(names)
    st = profile.string_table
    key_index = value_index = -1
    version_keys: set[int] = set()
    if version:
        existing = {s: i for i, s in enumerate(st)} if len(st) < 4096 else None

        def intern(text: str) -> tuple[int, bool]:
            want = text.encode()
            found = existing.get(want) if existing is not None else (list(st).index(want) if want in st else None)
            if found is not None:
                return found, True
            st.append(want)
            return len(st) - 1, False
        key_index, had_key = intern("version")
        value_index, _ = intern(version)
        if had_key:
            # pprof allows a string twice in the table: the producer's label may use any "version".
            version_keys = {i for i, s in enumerate(st) if s == b"version"}
    for sample in profile.sample:
        sums = list(map(_add, sums, sample.value))
        if key_index < 0:
            continue
        if version_keys and any(label.key in version_keys for label in sample.label):
            continue  # a version label the producer set itself wins
        sample.label.add(key=key_index, str=value_index)
    return dict(zip(names, sums))
