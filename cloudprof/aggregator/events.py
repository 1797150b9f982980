"""The cloud events that start the aggregator, parsed at the edge into what it needs: keys or "run pending".

Shapes follow the documented payloads (samples in tests/events/): S3 event
notifications (version 2.x) delivered in SQS message bodies, EventBridge
"Object Created" events, EventBridge scheduled events, GCS object-finalize
CloudEvents and Cloud Scheduler HTTP calls.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from cloudprof.errors import CloudprofError

__all__ = [
    "EventError",
    "ObjectEvent",
    "ScheduledEvent",
    "SqsMessage",
    "cloud_event_parts",
    "gcs_object_event",
    "is_scheduled_event",
    "objects_in_sqs_body",
    "parse_sqs_event",
    "scheduled_event",
]

GCS_FINALIZED = "google.cloud.storage.object.v1.finalized"


class EventError(CloudprofError, ValueError):
    """An event this aggregator cannot read; retrying it would not help."""


class ObjectEvent(BaseModel):
    """An object was written: which bucket and key (already URL-decoded)."""

    bucket: str
    key: str
    size: int | None = None
    etag: str | None = None


class ScheduledEvent(BaseModel):
    time: datetime | None = None
    lookback_hours: int | None = None


class SqsMessage(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    message_id: str = Field(alias="messageId")
    body: str
    event_source: str = Field("aws:sqs", alias="eventSource")


# --- AWS -----------------------------------------------------------------------


class _S3Object(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    key: str
    size: int | None = None
    etag: str | None = Field(None, alias="eTag")


class _S3Bucket(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str


class _S3Entity(BaseModel):
    model_config = ConfigDict(extra="ignore")
    bucket: _S3Bucket
    object: _S3Object


class _S3Record(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")
    event_source: str = Field(alias="eventSource")
    event_name: str = Field(alias="eventName")
    s3: _S3Entity


def parse_sqs_event(event: dict[str, Any]) -> list[SqsMessage]:
    records = event.get("Records")
    if not isinstance(records, list):
        raise EventError("not an SQS event: no Records list")
    try:
        return [SqsMessage.model_validate(r) for r in records]
    except ValidationError as exc:
        raise EventError(f"bad SQS record: {exc.errors()[0]['msg']}") from None


def objects_in_sqs_body(body: str) -> list[ObjectEvent]:
    """The created objects an SQS message body announces ([] for S3's test event).

    S3 URL-encodes keys in notifications (`service=a` arrives as `service%3Da`,
    spaces as `+`), so keys are decoded here. EventBridge events carry them raw.
    """
    try:
        doc = json.loads(body)
    except ValueError:
        raise EventError("SQS message body is not JSON") from None
    if not isinstance(doc, dict):
        raise EventError("SQS message body is not a JSON object")
    if doc.get("Event") == "s3:TestEvent":
        return []
    if "Type" in doc and doc.get("Type") == "Notification" and "Message" in doc:  # through SNS
        return objects_in_sqs_body(doc["Message"])
    if doc.get("source") == "aws.s3" and doc.get("detail-type") == "Object Created":
        detail = doc.get("detail") or {}
        try:
            return [ObjectEvent(bucket=detail["bucket"]["name"], key=detail["object"]["key"],
                                size=detail["object"].get("size"), etag=detail["object"].get("etag"))]
        except (KeyError, TypeError):
            raise EventError("EventBridge Object Created event without bucket.name/object.key") from None
    if "Records" not in doc:
        raise EventError("SQS message body is neither an S3 notification nor an EventBridge S3 event")
    out = []
    for raw in doc["Records"]:
        try:
            record = _S3Record.model_validate(raw)
        except ValidationError as exc:
            raise EventError(f"bad S3 event record: {exc.errors()[0]['loc']} {exc.errors()[0]['msg']}") from None
        if record.event_source != "aws:s3" or not record.event_name.startswith("ObjectCreated:"):
            continue
        out.append(ObjectEvent(bucket=record.s3.bucket.name, key=unquote_plus(record.s3.object.key),
                               size=record.s3.object.size, etag=record.s3.object.etag))
    return out


def is_scheduled_event(event: dict[str, Any]) -> bool:
    return event.get("source") in ("aws.events", "aws.scheduler") or event.get("detail-type") == "Scheduled Event"


def scheduled_event(event: dict[str, Any]) -> ScheduledEvent:
    detail = event.get("detail") if isinstance(event.get("detail"), dict) else {}
    return ScheduledEvent(time=event.get("time"), lookback_hours=detail.get("lookback_hours"))


# --- GCP -----------------------------------------------------------------------


def cloud_event_parts(cloud_event: Any) -> tuple[dict[str, Any], Any]:
    """(attributes, data) of a cloudevents.http.CloudEvent, a functions-framework event or a plain dict."""
    if isinstance(cloud_event, dict):
        attributes = {k: v for k, v in cloud_event.items() if k != "data"}
        return attributes, cloud_event.get("data")
    data = getattr(cloud_event, "data", None)
    if hasattr(cloud_event, "get_attributes"):
        attributes = dict(cloud_event.get_attributes())
    elif isinstance(getattr(cloud_event, "attributes", None), dict):
        attributes = dict(cloud_event.attributes)
    else:
        attributes = {name: cloud_event[name] for name in ("type", "source", "subject", "id", "time") if _has(cloud_event, name)}
    return attributes, data


def _has(obj: Any, name: str) -> bool:
    try:
        obj[name]
    except (KeyError, TypeError, IndexError):
        return False
    return True


def gcs_object_event(cloud_event: Any) -> ObjectEvent | None:
    """The finalized object of a GCS CloudEvent; None for other event types (which are ignored)."""
    attributes, data = cloud_event_parts(cloud_event)
    if attributes.get("type") != GCS_FINALIZED:
        return None
    if isinstance(data, (bytes, str)):
        try:
            data = json.loads(data)
        except ValueError:
            raise EventError("GCS CloudEvent data is not JSON") from None
    if not isinstance(data, dict) or "name" not in data or "bucket" not in data:
        raise EventError("GCS CloudEvent data has no bucket/name")
    size = data.get("size")
    return ObjectEvent(bucket=data["bucket"], key=data["name"], size=int(size) if size is not None else None,
                       etag=str(data.get("generation") or data.get("etag") or "") or None)
