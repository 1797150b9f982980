"""Google Cloud Functions / Cloud Run entry point: `cloudprof.aggregator.handlers.gcp.handler`.

- GCS object-finalize CloudEvent (Eventarc `google.cloud.storage.object.v1.finalized`):
  a cloudevents `CloudEvent` (attributes + `.data`) or the same as a plain dict;
  merges the object's partition; raises on failure so Eventarc retries.
- Cloud Scheduler HTTP call (a flask request): aggregates pending partitions of
  the last hours (CLOUDPROF_AGGREGATE_LOOKBACK_HOURS, default 3, or the JSON body's
  `lookback_hours`); answers 200 with a JSON summary, raises on failure (HTTP 500,
  which Cloud Scheduler retries).
"""

from __future__ import annotations

import json
import logging
from typing import Any

from cloudprof.aggregator.events import EventError, gcs_object_event
from cloudprof.aggregator.handlers.common import get_store, lookback_hours, merge_partitions, partitions_for_objects, run_pending, storage_url
from cloudprof.aggregator.merge import MergeOptions
from cloudprof.errors import CloudprofError
from cloudprof.times import parse_time

__all__ = ["handler", "on_object_finalized", "on_schedule"]

log = logging.getLogger("cloudprof.aggregator")


def handler(event_or_request: Any):
    """One entry point for both triggers: a flask-like request is the scheduler, anything else a CloudEvent."""
    if _is_http_request(event_or_request):
        return on_schedule(event_or_request)
    return on_object_finalized(event_or_request)


def _is_http_request(obj: Any) -> bool:
    return hasattr(obj, "method") and hasattr(obj, "headers") and hasattr(obj, "get_data")


def on_object_finalized(cloud_event: Any) -> dict[str, Any]:
    obj = gcs_object_event(cloud_event)
    if obj is None:
        log.info("ignoring a CloudEvent that is not an object finalize")
        return {"partitions": []}
    url = storage_url()
    outcomes = merge_partitions(get_store(url), partitions_for_objects(url, [obj]))
    failed = {p.label(): str(o) for p, o in outcomes.items() if isinstance(o, Exception)}
    if failed:
        raise CloudprofError(f"merge failed for {failed}")
    return {"partitions": [o.to_dict() for o in outcomes.values()]}


def on_schedule(request: Any):
    body = request.get_data() or b""
    try:
        options = json.loads(body) if body.strip() else {}
    except ValueError:
        raise EventError("Cloud Scheduler body is not JSON") from None
    if not isinstance(options, dict):
        options = {}
    hours = int(options.get("lookback_hours") or lookback_hours())
    when = request.headers.get("X-CloudScheduler-ScheduleTime")
    report = run_pending(get_store(), parse_time(when) if when else None, hours, MergeOptions())
    if report.failures:
        raise CloudprofError(report.summary())
    payload = {"summary": report.summary(), "partitions": [r.to_dict() for r in report.results]}
    return json.dumps(payload), 200, {"Content-Type": "application/json"}
