"""AWS Lambda entry point: `cloudprof.aggregator.handlers.aws_lambda.handler`.

Events:
- SQS batch of S3 event notifications (or EventBridge "Object Created" events):
  merges each partition named; returns `batchItemFailures` naming only the
  messages whose partition failed (enable ReportBatchItemFailures on the
  event source mapping), so SQS redelivers just those.
- S3 event notification invoking the function directly: merges; raises on failure.
- EventBridge schedule: aggregates pending partitions of the last hours
  (setting aggregate_lookback_hours, CLOUDPROF_AGGREGATE_LOOKBACK_HOURS, default 3, or detail.lookback_hours); raises on failure.
- Fan-out steps `{"cloudprof": "shard", "plan": KEY, "index": I}` and
  `{"cloudprof": "reduce", "plan": KEY}`, for a Step Functions map over shards.
- Manual runs: `{"cloudprof": "partition", "service": S, "hour": "2026-11-25T14", "kind": "cpu"}`
  and `{"cloudprof": "pending", "lookback_hours": N}` (e.g. `aws lambda invoke`).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cloudprof.aggregator.events import (
    EventError, is_scheduled_event, objects_in_sqs_body, parse_sqs_event, scheduled_event,
)
from cloudprof.aggregator.handlers.common import (
    get_store, lookback_hours, merge_partitions, partitions_for_objects, run_pending, storage_url,
)
from cloudprof.aggregator.merge import MergeOptions, merge_partition
from cloudprof.aggregator.shards import reduce_shards, run_shard
from cloudprof.errors import CloudprofError
from cloudprof.times import parse_time

__all__ = ["handler"]

log = logging.getLogger("cloudprof.aggregator")
# Lambda's root logger stops at WARNING; our per-partition summaries are INFO and belong in CloudWatch.
logging.getLogger("cloudprof").setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any = None) -> dict[str, Any]:
    if not isinstance(event, dict):
        raise EventError(f"unexpected event of type {type(event).__name__}")
    records = event.get("Records")
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:sqs":
        return _sqs(event)
    if isinstance(records, list) and records and records[0].get("eventSource") == "aws:s3":
        return _direct_s3(event)
    if is_scheduled_event(event):
        return _scheduled(event)
    if event.get("cloudprof") == "shard":
        result = run_shard(get_store(), event["plan"], int(event["index"]))
        return {"shard": result.index, "inputs": len(result.entries)}
    if event.get("cloudprof") == "reduce":
        return reduce_shards(get_store(), event["plan"]).to_dict()
    if event.get("cloudprof") == "partition":
        hour = parse_time(str(event["hour"]))
        return merge_partition(get_store(), event["service"], hour, event.get("kind", "cpu")).to_dict()
    if event.get("cloudprof") == "pending":
        return _scheduled({"source": "aws.events", "detail": {"lookback_hours": event.get("lookback_hours")}})
    raise EventError(f"unrecognised event (keys: {sorted(event)[:8]})")


def _sqs(event: dict[str, Any]) -> dict[str, Any]:
    url = storage_url()
    store = get_store(url)
    failures: list[str] = []
    by_partition: dict = {}
    for message in parse_sqs_event(event):
        try:
            objects = objects_in_sqs_body(message.body)
        except EventError as exc:
            # Unreadable now means unreadable on every retry; failing it routes it to the DLQ where someone sees it.
            log.error("message %s: %s", message.message_id, exc)
            failures.append(message.message_id)
            continue
        for part in partitions_for_objects(url, objects):
            by_partition.setdefault(part, []).append(message.message_id)
    outcomes = merge_partitions(store, by_partition)
    for part, outcome in outcomes.items():
        if isinstance(outcome, Exception):
            failures.extend(by_partition[part])
    unique = list(dict.fromkeys(failures))
    return {"batchItemFailures": [{"itemIdentifier": message_id} for message_id in unique]}


def _direct_s3(event: dict[str, Any]) -> dict[str, Any]:
    url = storage_url()
    objects = objects_in_sqs_body(json.dumps(event))
    outcomes = merge_partitions(get_store(url), partitions_for_objects(url, objects))
    failed = {p.label(): str(o) for p, o in outcomes.items() if isinstance(o, Exception)}
    if failed:
        raise CloudprofError(f"{len(failed)} partitions failed: {failed}")
    return {"partitions": [o.to_dict() for o in outcomes.values()]}


def _scheduled(event: dict[str, Any]) -> dict[str, Any]:
    scheduled = scheduled_event(event)
    hours = scheduled.lookback_hours or lookback_hours()
    report = run_pending(get_store(), scheduled.time, hours, MergeOptions())
    if report.failures:
        raise CloudprofError(report.summary())
    return {"summary": report.summary(), "partitions": [r.to_dict() for r in report.results]}
