"""Read a service's profiles for a time range: merged hours where whole, raw uploads elsewhere, each input once.

For every UTC hour overlapping [start, end):
- fully inside the range: the committed merged generation the hour's manifest names,
  plus raw uploads the manifest does not list yet (late arrivals, an open hour);
- cut by the range's edges, or never merged: the raw uploads whose window start
  (`start_ms` in the key) falls inside the range.
A merged object covers exactly the inputs its manifest lists, so nothing counts twice;
once hours are merged the number of objects read grows with hours, not with uploads.
"""

from __future__ import annotations

import hashlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from itertools import islice
from typing import Iterator, Mapping

from cloudprof.aggregator.inputs import load_input
from cloudprof.aggregator.manifest import Manifest
from cloudprof.aggregator.partition import Partition
from cloudprof.aggregator.quarantine import Rejected
from cloudprof.errors import ConfigError, NotFound, ProfileError, StorageError
from cloudprof.pprof import Merger, Profile, decode, sample_type_names, strings
from cloudprof.query.tree import FlameTree, TreeBuilder, label_filter
from cloudprof.storage import keys as _keys
from cloudprof.times import hours_between

__all__ = ["NoData", "QueryStats", "Selection", "iter_profiles", "query_diff_tree", "query_profile", "query_tree"]

HOUR = timedelta(hours=1)


class NoData(ConfigError):
    """The range (or the service) has no profiles: a clear message instead of an empty file."""


@dataclass(frozen=True, slots=True)
class Selection:
    """What to read: one service's profiles of one kind in [start, end), optionally one version / thread."""

    service: str
    start: datetime
    end: datetime
    kind: str = "cpu"
    version: str | None = None
    thread: str | None = None

    def __post_init__(self) -> None:
        _keys.validate_service(self.service)
        _keys.validate_kind(self.kind)
        for name in ("start", "end"):
            value = getattr(self, name)
            if value.tzinfo is None:
                value = value.replace(tzinfo=timezone.utc)
            object.__setattr__(self, name, value.astimezone(timezone.utc))
        if not self.start < self.end:
            raise ConfigError(f"empty time range: from {self.start:%Y-%m-%dT%H:%M:%SZ} is not before "
                              f"to {self.end:%Y-%m-%dT%H:%M:%SZ}")

    @property
    def labels(self) -> dict[str, str]:
        wanted = {}
        if self.version is not None:
            wanted["version"] = self.version
        if self.thread is not None:
            wanted["thread_name"] = self.thread
        return wanted

    def describe(self) -> str:
        what = f"service {self.service!r} ({self.kind})"
        if self.version is not None:
            what += f" version {self.version!r}"
        if self.thread is not None:
            what += f" thread {self.thread!r}"
        return f"{what} between {self.start:%Y-%m-%dT%H:%M:%SZ} and {self.end:%Y-%m-%dT%H:%M:%SZ}"


@dataclass(slots=True)
class QueryStats:
    """What a query cost and where its data came from (the benchmark prints these)."""

    hours: int = 0
    hours_merged: int = 0  # served by a merged generation (plus any stragglers)
    hours_raw: int = 0  # served by raw uploads only (range edge, or not merged yet)
    manifests_read: int = 0
    merged_read: int = 0
    raw_read: int = 0
    stragglers: int = 0  # raw uploads of a merged hour not yet in its manifest
    skipped: int = 0  # raw uploads that failed to load (the aggregator will quarantine them)
    list_calls: int = 0
    keys_listed: int = 0
    bytes_read: int = 0
    profiles: int = 0  # profiles that contributed (after the version/thread filter)
    skipped_keys: list[str] = field(default_factory=list)

    @property
    def objects_read(self) -> int:
        return self.manifests_read + self.merged_read + self.raw_read

    def merge(self, other: "QueryStats") -> None:
        """Add another's counters (each worker thread counts into its own, merged by the consumer)."""
        for name in self.__slots__:
            value = getattr(self, name)
            if isinstance(value, int):
                setattr(self, name, value + getattr(other, name))
        self.skipped_keys.extend(other.skipped_keys)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["objects_read"] = self.objects_read
        out["skipped_keys"] = self.skipped_keys[:20]
        return out


def _get(store, key: str, stats: QueryStats) -> bytes:
    data = store.get(key)
    stats.bytes_read += len(data)
    return data


def _list(store, prefix: str, stats: QueryStats):
    stats.list_calls += 1
    for info in store.list(prefix):
        stats.keys_listed += 1
        yield info


def _read_manifest(store, part: Partition, stats: QueryStats) -> Manifest | None:
    try:
        data = _get(store, part.manifest_key, stats)
    except NotFound:
        return None
    finally:
        stats.manifests_read += 1
    try:
        return Manifest.from_bytes(data)
    except ValueError as exc:
        raise StorageError(f"{store.url}/{part.manifest_key}: unreadable manifest: {exc}") from None


def _merged_generation(store, part: Partition, stats: QueryStats, attempts: int = 5,
                       manifest: Manifest | None = None) -> tuple[Manifest | None, bytes | None]:
    """The manifest and the merged bytes it commits, read as one consistent snapshot."""
    for attempt in range(attempts):
        if attempt or manifest is None:
            manifest = _read_manifest(store, part, stats)
        output = manifest.kind(part.kind).output if manifest else None
        if output is None:
            return manifest, None
        try:
            data = _get(store, output.object, stats)
        except NotFound:
            continue  # a newer run replaced that generation after we read the manifest: read the new one
        finally:
            stats.merged_read += 1
        if hashlib.sha256(data).hexdigest() == output.sha256:
            return manifest, data
    raise StorageError(f"{store.url}/{part.manifest_key}: the merged {part.kind} generation kept changing while reading it")


def _get_raw(store, key: str, stats: QueryStats) -> bytes | None:
    try:
        return _get(store, key, stats)
    except NotFound:
        return None  # quarantined or cleaned up since the listing
    finally:
        stats.raw_read += 1


@dataclass(slots=True)
class _Hour:
    """One hour's bytes, fetched by a worker thread; decoded by the consumer in hour order."""

    part: Partition
    merged: bytes | None = None
    raw: list[tuple[str, bytes]] = field(default_factory=list)
    stragglers: bool = False  # the hour has a manifest: raw uploads read are ones it does not list yet
    stats: QueryStats = field(default_factory=QueryStats)


def _fetch_hour(store, sel: Selection, hour: datetime, start_ms: int, end_ms: int) -> _Hour:
    part = Partition(sel.service, hour, sel.kind)
    out = _Hour(part)
    stats = out.stats
    stats.hours = 1
    whole = sel.start <= hour and hour + HOUR <= sel.end
    known: set[str] = set()
    if whole:
        manifest = _read_manifest(store, part, stats)
        entry = manifest.kind(sel.kind) if manifest is not None else None
        if entry is not None:
            known = entry.keys()
            # The manifest records each input's version: skip a generation holding none of the wanted one.
            if entry.output is not None and (sel.version is None or any(
                    e.status == "merged" and e.version == sel.version for e in entry.inputs)):
                manifest, out.merged = _merged_generation(store, part, stats, manifest=manifest)
                known = manifest.kind(sel.kind).keys() if manifest is not None else set()
    out.stragglers = bool(known)
    wanted = []
    for info in _list(store, part.raw_prefix, stats):
        if info.key in known:
            continue
        try:
            raw = _keys.RawKey.parse(info.key)
        except StorageError:
            stats.skipped += 1
            stats.skipped_keys.append(info.key)
            continue
        if whole or start_ms <= raw.start_ms < end_ms:
            wanted.append(info.key)
    if len(wanted) > 4:
        # An hour that is not merged yet can hold thousands of small uploads: fetch them concurrently.
        owns = [QueryStats() for _ in wanted]  # per-request counters: no shared writes across threads
        with ThreadPoolExecutor(max_workers=4) as pool:
            datas = list(pool.map(lambda key, own: _get_raw(store, key, own), wanted, owns))
        for key, own, data in zip(wanted, owns, datas):
            stats.merge(own)
            if data is not None:
                out.raw.append((key, data))
    else:
        for key in wanted:
            data = _get_raw(store, key, stats)
            if data is not None:
                out.raw.append((key, data))
    return out


def iter_profiles(store, sel: Selection, stats: QueryStats | None = None, *, workers: int = 8) -> Iterator[Profile]:
    """Every profile the selection covers, unfiltered (merged hours whole, raw uploads by window start).

    Hours are fetched by `workers` threads a few hours ahead of the consumer (object
    stores answer in tens of milliseconds; decoding stays on the calling thread, in hour order).
    """
    stats = stats if stats is not None else QueryStats()
    start_ms = int(sel.start.timestamp() * 1000)
    end_ms = int(sel.end.timestamp() * 1000)
    todo = iter(hours_between(sel.start, sel.end))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        ahead: deque = deque(pool.submit(_fetch_hour, store, sel, h, start_ms, end_ms)
                             for h in islice(todo, 2 * max(1, workers)))
        try:
            while ahead:
                fetched: _Hour = ahead.popleft().result()
                following = next(todo, None)
                if following is not None:
                    ahead.append(pool.submit(_fetch_hour, store, sel, following, start_ms, end_ms))
                stats.merge(fetched.stats)
                if fetched.merged is not None:
                    stats.hours_merged += 1
                    # Its sha256 matched the manifest: these are the bytes the aggregator wrote after
                    # validating every input, so the per-hour validation pass (~25% of a week's CPU) is skipped.
                    yield decode(fetched.merged, check=False)
                used_raw = False
                for key, data in fetched.raw:
                    try:
                        profile = load_input(data, fetched.part).profile
                    except (Rejected, ProfileError):
                        stats.skipped += 1
                        stats.skipped_keys.append(key)
                        continue
                    used_raw = True
                    if fetched.stragglers:
                        stats.stragglers += 1
                    yield profile
                if used_raw and not fetched.stragglers:
                    stats.hours_raw += 1
        finally:
            for future in ahead:
                future.cancel()


def _filtered(profile: Profile, labels: Mapping[str, str]) -> Profile | None:
    """The profile with only samples carrying these string labels; None when none do."""
    keep = label_filter(profile, strings(profile), labels)
    kept = [s for s in profile.sample if keep(s)]
    if not kept:
        return None
    if len(kept) == len(profile.sample):
        return profile
    out = Profile()
    out.CopyFrom(profile)
    del out.sample[:]
    out.sample.extend(kept)
    return out


def _no_data(store, sel: Selection) -> NoData:
    for area in ("raw", "merged"):
        for _ in store.list(_keys.partition_prefix(sel.service, area=area), page_size=1):  # one key tells
            return NoData(f"no data for {sel.describe()} in {store.url}")
    return NoData(f"no data for service {sel.service!r} in {store.url}: it has no raw or merged profiles "
                  "(check --service and --storage)")


def query_profile(store, sel: Selection, stats: QueryStats | None = None, *, workers: int = 8) -> Profile:
    """One merged pprof profile for the selection (version/thread filters applied); NoData when empty."""
    stats = stats if stats is not None else QueryStats()
    merger = Merger()
    labels = sel.labels
    for profile in iter_profiles(store, sel, stats, workers=workers):
        if labels:
            profile = _filtered(profile, labels)
            if profile is None:
                continue
        merger.add(profile)
        stats.profiles += 1
    if not stats.profiles:
        raise _no_data(store, sel)
    return merger.result()


def query_tree(store, sel: Selection, stats: QueryStats | None = None, *, workers: int = 8) -> FlameTree:
    """The selection folded straight into a call tree (no intermediate merged profile); NoData when empty."""
    stats = stats if stats is not None else QueryStats()
    builder = _fold(store, sel, stats, None, 0, workers)
    if builder is None:
        raise _no_data(store, sel)
    return builder.build()


def query_diff_tree(store, base: Selection, target: Selection, base_stats: QueryStats | None = None,
                    target_stats: QueryStats | None = None) -> FlameTree:
    """Base and target selections folded into one two-set tree (for the differential flame graph)."""
    base_stats = base_stats if base_stats is not None else QueryStats()
    target_stats = target_stats if target_stats is not None else QueryStats()
    if (base.service, base.start, base.end, base.kind) == (target.service, target.start, target.end, target.kind):
        return _diff_in_one_pass(store, base, target, base_stats, target_stats)
    builder = _fold(store, target, target_stats, None, 1)
    if builder is None:
        raise _no_data(store, target)
    if _fold(store, base, base_stats, builder, 0) is None:
        raise _no_data(store, base)
    return builder.build()


def _diff_in_one_pass(store, base: Selection, target: Selection, base_stats: QueryStats,
                      target_stats: QueryStats) -> FlameTree:
    """Two versions (or threads) of one range: read it once, fold each profile into both sides.

    Both stats objects report the same, single read.
    """
    shared = QueryStats()
    builder: TreeBuilder | None = None
    for profile in iter_profiles(store, Selection(base.service, base.start, base.end, base.kind), shared):
        if builder is None:
            builder = TreeBuilder(sample_type_names(profile), sets=2)
        base_stats.profiles += bool(builder.add(profile, set_index=0, labels=base.labels))
        target_stats.profiles += bool(builder.add(profile, set_index=1, labels=target.labels))
    for stats in (base_stats, target_stats):
        profiles = stats.profiles
        stats.merge(shared)
        stats.profiles = profiles
    if builder is None or not target_stats.profiles:
        raise _no_data(store, target)
    if not base_stats.profiles:
        raise _no_data(store, base)
    return builder.build()


def _fold(store, sel: Selection, stats: QueryStats, builder: TreeBuilder | None, set_index: int,
          workers: int = 8) -> TreeBuilder | None:
    """Fold a selection into `builder` (made on first profile when None); None when nothing matched."""
    labels = sel.labels
    for profile in iter_profiles(store, sel, stats, workers=workers):
        if builder is None:
            builder = TreeBuilder(sample_type_names(profile), sets=2 if set_index else 1)
        if builder.add(profile, set_index=set_index, labels=labels):
            stats.profiles += 1
    return builder if stats.profiles else None
