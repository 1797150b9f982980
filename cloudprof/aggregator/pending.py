"""Find partitions with work left and aggregate many partitions, in parallel processes.

A partition is pending when a raw input under it is not named in its manifest,
when its manifest still says `open` after the hour (plus grace) is over, or
when the published `{kind}.pb.gz` is not the generation the manifest commits.
Finding them lists folders first (services, then the hours asked for) and objects
only in the candidate hours, so a scheduled scan never reads the bucket's history.
"""

from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterable, Iterator, Sequence

from cloudprof.aggregator.manifest import read_manifest
from cloudprof.aggregator.merge import MergeOptions, MergeResult, merge_partition
from cloudprof.aggregator.partition import Partition, hour_is_open, partition_of_key
from cloudprof.errors import CloudprofError, ConfigError, NotFound, StorageError
from cloudprof.storage import keys as _keys

__all__ = ["AggregateReport", "aggregate", "find_pending", "list_partitions"]

log = logging.getLogger("cloudprof.aggregator")

RAW_ROOT = "raw/"


# Up to this many hours per service, each hour's folder is listed blind (an empty one costs one
# call); above it, the service's date= and hour= folders are walked first, so a month's range on a
# service that ran for a day does not cost 720 listings.
DIRECT_HOURS = 24


def _raw_prefixes(store, service: str | None, hours: Sequence[datetime] | None) -> Iterator[str]:
    """The folders whose objects are listed: each candidate hour's, or each service's whole folder.

    Services come from the folders under raw/ (`prefixes`), never from listing every raw object.
    Without hours every object of a service is a candidate, so one paged listing per service is
    the cheapest; walking its dates and hours would only add calls.
    """
    for svc in [_keys.validate_service(service)] if service else _services(store):
        if hours:
            yield from _hour_prefixes(store, svc, hours)
        else:
            yield _keys.partition_prefix(svc)


def _services(store) -> Iterator[str]:
    head = RAW_ROOT + "service="
    for folder in store.prefixes(RAW_ROOT):
        if not folder.startswith(head):
            continue
        try:
            yield _keys.validate_service(folder[len(head):-1])
        except ConfigError:
            continue  # not a folder the agent writes (its files are left alone)


def _hour_prefixes(store, service: str, hours: Sequence[datetime]) -> list[str]:
    wanted = sorted({_keys.partition_prefix(service, hour) for hour in hours})
    if len(wanted) <= DIRECT_HOURS:
        return wanted
    by_day: dict[str, set[str]] = {}
    for prefix in wanted:  # raw/service=S/date=D/hour=H/
        by_day.setdefault(prefix[: prefix.rindex("/", 0, -1) + 1], set()).add(prefix)
    found = []
    for day in store.prefixes(_keys.partition_prefix(service)):
        if day in by_day:
            found.extend(hour for hour in store.prefixes(day) if hour in by_day[day])
    return found


def list_partitions(store, *, service: str | None = None, hours: Sequence[datetime] | None = None) -> dict[Partition, set[str]]:
    """Every partition with raw inputs (optionally one service, some hours), with its raw keys.

    A key that does not parse is grouped under the partition its folder names when
    that can be told, so merging that partition quarantines it.
    """
    wanted = {h.replace(minute=0, second=0, microsecond=0) for h in hours} if hours else None
    found: dict[Partition, set[str]] = {}
    for prefix in _raw_prefixes(store, service, hours):
        for info in store.list(prefix):
            part = partition_of_key(info.key) or _partition_of_folder(info.key)
            if part is None:
                continue
            if wanted is not None and part.hour not in wanted:
                continue
            if service and part.service != service:
                continue
            found.setdefault(part, set()).add(info.key)
    return found


def _partition_of_folder(key: str) -> Partition | None:
    """raw/service=S/date=D/hour=H/kind/<anything> -> its partition (for badly named uploads)."""
    parts = key.split("/")
    try:
        index = parts.index(RAW_ROOT.strip("/"))
        service, date, hour, kind = parts[index + 1 : index + 5]
        if not (service.startswith("service=") and date.startswith("date=") and hour.startswith("hour=")) or len(parts) < index + 6:
            return None
        moment = datetime.strptime(f"{date[5:]}T{hour[5:]}", "%Y-%m-%dT%H").replace(tzinfo=timezone.utc)
        _keys.validate_service(service[len("service="):])
        _keys.validate_kind(kind)
    except (ValueError, IndexError, ConfigError):
        return None  # not a folder the agent writes; left alone
    return Partition(service[len("service="):], moment, kind)


def find_pending(store, *, service: str | None = None, hours: Sequence[datetime] | None = None,
                 now: datetime | None = None, grace=None) -> list[Partition]:
    now = now or datetime.now(timezone.utc)
    grace = grace if grace is not None else MergeOptions().grace
    pending = []
    by_hour: dict[tuple[str, datetime], list[tuple[Partition, set[str]]]] = {}
    for part, raw_keys in list_partitions(store, service=service, hours=hours).items():
        by_hour.setdefault((part.service, part.hour), []).append((part, raw_keys))
    for (svc, hour), parts in sorted(by_hour.items()):
        try:
            manifest, _ = read_manifest(store, parts[0][0].manifest_key)
        except StorageError as exc:  # e.g. a corrupt manifest: report the partitions as failing, not hide them
            log.error("%s", exc)
            pending.extend(part for part, _ in parts)
            continue
        for part, raw_keys in parts:
            entry = manifest.kind(part.kind) if manifest else None
            if entry is None or raw_keys - entry.keys():
                pending.append(part)
            elif manifest.open and not hour_is_open(hour, now=now, grace=grace):
                pending.append(part)
            elif entry.output is not None and not _published(store, part, entry.output.sha256):
                pending.append(part)
    return sorted(pending)


def _published(store, part: Partition, sha256: str) -> bool:
    try:
        return store.head(part.merged_key).metadata.get("sha256") == sha256
    except NotFound:
        return False


@dataclass(slots=True)
class AggregateReport:
    results: list[MergeResult]
    failures: list[tuple[Partition, str]]
    seconds: float = 0.0

    @property
    def merged(self) -> int:
        return sum(r.merged for r in self.results)

    @property
    def quarantined(self) -> int:
        return sum(r.quarantined for r in self.results)

    def summary(self) -> str:
        text = (f"{len(self.results)} partitions, {self.merged} inputs merged, "
                f"{self.quarantined} quarantined, {self.seconds:.1f} s")
        if self.failures:
            text += f"; {len(self.failures)} partitions FAILED: " + "; ".join(f"{p.label()}: {e}" for p, e in self.failures[:3])
        return text


def _merge_in_worker(url: str, part_dict: dict, options: MergeOptions) -> dict:
    from cloudprof.storage import open_store

    part = Partition.from_dict(part_dict)
    return merge_partition(open_store(url), part.service, part.hour, part.kind, options=options).to_dict()


def aggregate(store, partitions: Iterable[Partition], *, workers: int = 1, options: MergeOptions = MergeOptions(),
              progress: Callable[[int, int], None] | None = None,
              on_inputs: Callable[[int], None] | None = None) -> AggregateReport:
    """Merge each partition; with workers > 1, partitions run in a process pool (one store per process).

    `progress(done, total)` after each partition; `on_inputs(n)` as inputs are read (per input
    when partitions run here, per partition when they run in the pool).
    """
    import time

    started = time.monotonic()
    parts = sorted(set(partitions))
    report = AggregateReport([], [])
    total = len(parts)
    if workers > 1 and len(parts) > 1 and not store.url.startswith("memory://"):
        with ProcessPoolExecutor(max_workers=min(workers, len(parts))) as pool:
            futures = {pool.submit(_merge_in_worker, store.url, p.to_dict(), options): p for p in parts}
            for future in as_completed(futures):
                part = futures[future]
                try:
                    report.results.append(_result_from_dict(future.result()))
                    if on_inputs:
                        on_inputs(report.results[-1].merged + report.results[-1].quarantined)
                except CloudprofError as exc:
                    report.failures.append((part, str(exc)))
                if progress:
                    progress(len(report.results) + len(report.failures), total)
    else:
        for part in parts:
            try:
                report.results.append(merge_partition(store, part.service, part.hour, part.kind, options=options,
                                                      progress=on_inputs))
            except CloudprofError as exc:
                log.error("%s: %s", part.label(), exc)
                report.failures.append((part, str(exc)))
            if progress:
                progress(len(report.results) + len(report.failures), total)
    report.results.sort(key=lambda r: r.partition)
    report.seconds = time.monotonic() - started
    return report


def _result_from_dict(data: dict) -> MergeResult:
    part = Partition.from_dict(data)
    fields = {k: v for k, v in data.items() if k not in ("service", "hour", "kind")}
    return MergeResult(part, **fields)
