"""What both serverless handlers share: the store from settings, event keys -> partitions, running merges."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone
from typing import Iterable
from urllib.parse import urlparse

from cloudprof.aggregator.events import ObjectEvent
from cloudprof.aggregator.merge import MergeOptions, MergeResult, merge_partition
from cloudprof.aggregator.partition import Partition, partition_of_key
from cloudprof.aggregator.pending import AggregateReport, aggregate, find_pending
from cloudprof.errors import ConfigError
from cloudprof.times import floor_hour

__all__ = ["get_store", "merge_partitions", "partitions_for_objects", "run_pending", "storage_url"]

log = logging.getLogger("cloudprof.aggregator")

_STORES: dict[str, object] = {}  # one client per warm container: creating boto3/GCS clients is slow


def storage_url() -> str:
    """The bucket URL from settings (CLOUDPROF_STORAGE, or cloudprof.toml), which a function must set."""
    from cloudprof.config import Settings, load_settings

    url = load_settings().storage
    if url == Settings.model_fields["storage"].default:
        raise ConfigError("CLOUDPROF_STORAGE is not set: the aggregator function needs the bucket URL "
                          "(s3://bucket/prefix or gs://bucket/prefix), not the local default")
    return url


def lookback_hours() -> int:
    from cloudprof.config import load_settings

    return load_settings().aggregate_lookback_hours


def get_store(url: str | None = None):
    from cloudprof.storage import open_store

    url = url or storage_url()
    if url not in _STORES:
        _STORES[url] = open_store(url)
    return _STORES[url]


def partitions_for_objects(url: str, objects: Iterable[ObjectEvent]) -> dict[Partition, list[str]]:
    """Raw uploads among `objects` that live in the store at `url`, by partition (store-relative keys)."""
    parsed = urlparse(url)
    bucket, prefix = parsed.netloc, parsed.path.strip("/")
    found: dict[Partition, list[str]] = {}
    for obj in objects:
        if obj.bucket != bucket:
            log.info("ignoring s3/gs object in bucket %s: the aggregator serves %s", obj.bucket, url)
            continue
        key = obj.key
        if prefix:
            if not key.startswith(prefix + "/"):
                continue
            key = key[len(prefix) + 1 :]
        part = partition_of_key(key)
        if part is not None:
            found.setdefault(part, []).append(key)
    return found


def merge_partitions(store, parts: Iterable[Partition], options: MergeOptions = MergeOptions()) -> dict[Partition, MergeResult | Exception]:
    """Merge each partition; an exception is returned for the one that failed, the others still run."""
    outcomes: dict[Partition, MergeResult | Exception] = {}
    for part in sorted(set(parts)):
        try:
            outcomes[part] = merge_partition(store, part.service, part.hour, part.kind, options=options)
            log.info("%s", outcomes[part].to_dict())
        except Exception as exc:  # noqa: BLE001 - reported per partition so the platform retries only it
            log.exception("%s: merge failed", part.label())
            outcomes[part] = exc
    return outcomes


def run_pending(store, when: datetime | None, hours: int, options: MergeOptions = MergeOptions()) -> AggregateReport:
    """Aggregate every pending partition of the `hours` hours up to `when` (one process: Lambda has no /dev/shm)."""
    end = floor_hour(when or datetime.now(timezone.utc))
    window = [end - timedelta(hours=i) for i in range(max(1, hours))]
    pending = find_pending(store, hours=window, now=when)
    report = aggregate(store, pending, workers=1, options=options)
    log.info("scheduled aggregate: %s", report.summary())
    return report
