"""Event parsing at the edge: documented payloads -> object keys or 'run pending'."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cloudprof.aggregator.events import (
    EventError, gcs_object_event, is_scheduled_event, objects_in_sqs_body, parse_sqs_event, scheduled_event,
)
from cloudprof.aggregator.handlers.common import partitions_for_objects
from cloudprof.aggregator.partition import Partition
from tests.aggregator import rawgen

EVENTS = Path(__file__).resolve().parent.parent / "events"


def load(name):
    return json.loads((EVENTS / name).read_text())


def test_s3_notification_keys_are_url_decoded():
    messages = parse_sqs_event(load("s3_notification_via_sqs.json"))
    assert [m.message_id for m in messages] == ["059f36b4-87a3-44ab-83d2-661975830a7d", "2e1424d4-f796-459a-8184-9c92662be6da"]
    objects = objects_in_sqs_body(messages[0].body)
    assert [o.key for o in objects] == [
        "raw/service=checkout/date=2026-11-25/hour=14/cpu/web-1.4242.1795615260000.0.pb.gz",
        "raw/service=checkout/date=2026-11-25/hour=14/cpu/web-2.77.1795615320000.0.pb.gz",
    ]
    assert objects[0].bucket == "cloudprof-profiles" and objects[0].size == 2048
    parts = partitions_for_objects("s3://cloudprof-profiles", objects + objects_in_sqs_body(messages[1].body))
    assert set(parts) == {Partition("checkout", rawgen.HOUR, "cpu"), Partition("search", rawgen.HOUR, "cpu")}


def test_store_prefix_and_other_buckets():
    body = load("s3_notification_via_sqs.json")["Records"][0]["body"]
    prefixed = json.loads(body)
    for record in prefixed["Records"]:
        record["s3"]["object"]["key"] = "team%2Fa/" + record["s3"]["object"]["key"]
    objects = objects_in_sqs_body(json.dumps(prefixed))
    assert objects[0].key.startswith("team/a/raw/service=checkout/")
    assert len(partitions_for_objects("s3://cloudprof-profiles/team/a", objects)[Partition("checkout", rawgen.HOUR, "cpu")]) == 2
    assert partitions_for_objects("s3://cloudprof-profiles/team/b", objects) == {}
    assert partitions_for_objects("s3://another-bucket/team/a", objects) == {}


def test_test_event_sns_wrapping_and_eventbridge_s3_events():
    test_body = load("s3_test_event_via_sqs.json")["Records"][0]["body"]
    assert objects_in_sqs_body(test_body) == []
    s3_body = load("s3_notification_via_sqs.json")["Records"][1]["body"]
    via_sns = json.dumps({"Type": "Notification", "MessageId": "x", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": s3_body})
    assert [o.key for o in objects_in_sqs_body(via_sns)] == [o.key for o in objects_in_sqs_body(s3_body)]
    eventbridge = {"version": "0", "detail-type": "Object Created", "source": "aws.s3", "time": "2026-11-25T14:01:02Z",
                   "detail": {"bucket": {"name": "cloudprof-profiles"},
                              "object": {"key": "raw/service=checkout/date=2026-11-25/hour=14/cpu/web-1.1.1795615260000.0.pb.gz",
                                         "size": 10, "etag": "abc"}}}
    assert objects_in_sqs_body(json.dumps(eventbridge))[0].key.endswith("web-1.1.1795615260000.0.pb.gz")


@pytest.mark.parametrize("body", ["not json", "[1, 2]", '{"hello": "world"}', '{"Records": [{"eventSource": "aws:s3"}]}'])
def test_unreadable_bodies_are_event_errors(body):
    with pytest.raises(EventError):
        objects_in_sqs_body(body)


def test_scheduled_event():
    evt = load("eventbridge_scheduled.json")
    assert is_scheduled_event(evt)
    assert scheduled_event(evt).time.isoformat() == "2026-11-25T16:05:00+00:00"
    assert not is_scheduled_event(load("s3_notification_via_sqs.json"))


def test_gcs_finalize_event():
    evt = load("gcs_object_finalized.json")
    obj = gcs_object_event(evt)
    assert (obj.bucket, obj.size, obj.etag) == ("cloudprof-profiles", 2048, "1795615262345678")
    assert obj.key == "raw/service=checkout/date=2026-11-25/hour=14/cpu/web-1.4242.1795615260000.0.pb.gz"
    assert gcs_object_event(dict(evt, type="google.cloud.storage.object.v1.archived")) is None
    with pytest.raises(EventError):
        gcs_object_event(dict(evt, data={"kind": "storage#object"}))
    as_text = dict(evt, data=json.dumps(evt["data"]))
    assert gcs_object_event(as_text) == obj
