"""Serverless handlers, fed the documented event payloads of tests/events/, against moto and fake-gcs-server."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from urllib.parse import unquote_plus

import pytest

from cloudprof.aggregator import Partition
from cloudprof.aggregator.handlers import aws_lambda, common, gcp
from cloudprof.errors import CloudprofError, ConfigError
from cloudprof.storage import open_store
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact
from tests.support import REPO

EVENTS = Path(__file__).resolve().parent.parent / "events"
BUCKET = "cloudprof-profiles"
CHECKOUT = Partition("checkout", rawgen.HOUR, "cpu")
SEARCH = Partition("search", rawgen.HOUR, "cpu")


def event(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def _upload_at(store, key: str, index: int):
    """An agent-like upload at exactly `key` (the event fixtures name their keys)."""
    from cloudprof.storage.keys import RawKey

    raw = RawKey.parse(key)
    data, totals = rawgen.agent_profile(raw.service, raw.start_ms, seed=index, host=raw.host, pid=raw.pid)
    store.put(key, data, metadata={"service": raw.service, "version": "1.0.0"})
    return rawgen.RawUpload(key, data, {}, totals)


def _sqs_keys(evt: dict) -> list[str]:
    return [unquote_plus(r["s3"]["object"]["key"]) for m in evt["Records"] for r in json.loads(m["body"])["Records"]]


@pytest.fixture
def fresh_handler_cache():
    common._STORES.clear()
    yield
    common._STORES.clear()


@pytest.fixture
def s3_bucket(aws_mock, monkeypatch, fresh_handler_cache):
    import boto3

    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=BUCKET)
    monkeypatch.setenv("CLOUDPROF_STORAGE", f"s3://{BUCKET}")
    return open_store(f"s3://{BUCKET}")


# --- AWS Lambda ----------------------------------------------------------------


def test_sqs_batch_of_s3_notifications_merges_each_partition(s3_bucket):
    evt = event("s3_notification_via_sqs.json")
    keys = _sqs_keys(evt)
    uploads = {k: _upload_at(s3_bucket, k, i) for i, k in enumerate(keys)}
    more = rawgen.put_many(s3_bucket, 3, start=40)  # already in the bucket, not in this batch: merged too
    assert aws_lambda.handler(evt, None) == {"batchItemFailures": []}
    checkout = [u for k, u in uploads.items() if "checkout" in k] + more
    assert_exact(s3_bucket, CHECKOUT, checkout)
    assert_exact(s3_bucket, SEARCH, [u for k, u in uploads.items() if "search" in k])
    assert aws_lambda.handler(evt, None) == {"batchItemFailures": []}  # SQS redelivery: nothing counts twice
    assert_exact(s3_bucket, CHECKOUT, checkout)


def test_only_messages_of_the_failed_partition_are_retried(s3_bucket):
    evt = event("s3_notification_via_sqs.json")
    for i, key in enumerate(_sqs_keys(evt)):
        _upload_at(s3_bucket, key, i)
    s3_bucket.put(SEARCH.manifest_key, b"{ not json")  # the search partition cannot be merged
    unreadable = copy.deepcopy(evt["Records"][0])
    unreadable["messageId"] = "5f3c6a4e-0000-4000-8000-000000000000"
    unreadable["body"] = "not json"
    evt["Records"].append(unreadable)
    result = aws_lambda.handler(evt, None)
    failed = {item["itemIdentifier"] for item in result["batchItemFailures"]}
    assert failed == {evt["Records"][1]["messageId"], unreadable["messageId"]}
    assert s3_bucket.head(CHECKOUT.manifest_key).size > 0


def test_s3_test_event_is_acknowledged(s3_bucket):
    assert aws_lambda.handler(event("s3_test_event_via_sqs.json"), None) == {"batchItemFailures": []}
    assert list(s3_bucket.list("merged/")) == []


def test_notification_that_moto_s3_really_sends_through_sqs(s3_bucket):
    import boto3

    sqs = boto3.client("sqs", region_name="us-east-1")
    queue_url = sqs.create_queue(QueueName="cloudprof-aggregator")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    boto3.client("s3", region_name="us-east-1").put_bucket_notification_configuration(
        Bucket=BUCKET, NotificationConfiguration={"QueueConfigurations": [
            {"QueueArn": arn, "Events": ["s3:ObjectCreated:*"],
             "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": "raw/"}]}}}]})
    uploads = rawgen.put_many(s3_bucket, 4)
    messages = []
    while True:
        got = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, AttributeNames=["All"]).get("Messages", [])
        if not got:
            break
        messages += got
    records = [{"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": {}, "md5OfBody": m["MD5OfBody"],
                "eventSource": "aws:sqs", "eventSourceARN": arn, "awsRegion": "us-east-1"} for m in messages]
    announced = {unquote_plus(rec["s3"]["object"]["key"]) for r in records for rec in json.loads(r["body"]).get("Records", [])}
    assert announced == {u.key for u in uploads}, announced
    assert aws_lambda.handler({"Records": records}, None) == {"batchItemFailures": []}
    assert_exact(s3_bucket, CHECKOUT, uploads)


def test_eventbridge_schedule_aggregates_pending_hours(s3_bucket):
    evt = event("eventbridge_scheduled.json")  # 16:05 UTC: looks at hours 16, 15, 14
    h14 = rawgen.put_many(s3_bucket, 4)
    h15 = rawgen.put_many(s3_bucket, 3, "search", hour=rawgen.HOUR + timedelta(hours=1))
    old = rawgen.put_many(s3_bucket, 2, hour=rawgen.HOUR - timedelta(hours=5))  # outside the lookback
    result = aws_lambda.handler(evt, None)
    assert result["summary"].startswith("2 partitions, 7 inputs merged, 0 quarantined")
    assert_exact(s3_bucket, CHECKOUT, h14)
    assert_exact(s3_bucket, Partition("search", rawgen.HOUR + timedelta(hours=1), "cpu"), h15)
    assert list(s3_bucket.list(Partition("checkout", rawgen.HOUR - timedelta(hours=5), "cpu").manifest_key)) == []
    assert old


def test_schedule_failure_raises_for_a_retry(s3_bucket):
    rawgen.put_many(s3_bucket, 2)
    s3_bucket.put(CHECKOUT.manifest_key, b"[]")
    with pytest.raises(CloudprofError, match="FAILED"):
        aws_lambda.handler(event("eventbridge_scheduled.json"), None)


def test_lambda_without_storage_setting_is_a_config_error(monkeypatch, fresh_handler_cache):
    monkeypatch.delenv("CLOUDPROF_STORAGE", raising=False)
    with pytest.raises(ConfigError, match="CLOUDPROF_STORAGE"):
        aws_lambda.handler(event("s3_notification_via_sqs.json"), None)


def test_handlers_import_without_the_cli():
    code = ("import sys; import cloudprof.aggregator.handlers.aws_lambda, cloudprof.aggregator.handlers.gcp;"
            "assert 'cloudprof.cli' not in sys.modules, 'handlers pulled in the CLI'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


# --- GCP -----------------------------------------------------------------------


@pytest.fixture
def gcs_bucket(fake_gcs, monkeypatch, fresh_handler_cache):
    name = fake_gcs.new_bucket("handler")
    monkeypatch.setenv("CLOUDPROF_STORAGE", f"gs://{name}")
    return name, open_store(f"gs://{name}")


def _finalize_event(bucket: str) -> dict:
    evt = event("gcs_object_finalized.json")
    evt["source"] = evt["source"].replace(BUCKET, bucket)
    evt["data"]["bucket"] = bucket
    return evt


class CloudEventLike:
    """The surface of cloudevents.http.CloudEvent that functions-framework passes: attributes + .data."""

    def __init__(self, attributes: dict, data):
        self._attributes = attributes
        self.data = data

    def __getitem__(self, name):
        return self._attributes[name]

    def get_attributes(self):
        return dict(self._attributes)


def test_gcs_finalize_cloud_event_as_dict_and_object(gcs_bucket):
    name, store = gcs_bucket
    evt = _finalize_event(name)
    first = _upload_at(store, evt["data"]["name"], 1)
    out = gcp.handler(evt)
    assert [p["merged"] for p in out["partitions"]] == [1]
    assert_exact(store, CHECKOUT, [first])
    more = rawgen.put_many(store, 2, start=10)
    attributes = {k: v for k, v in evt.items() if k != "data"}
    out = gcp.handler(CloudEventLike(attributes, evt["data"]))
    assert [p["merged"] for p in out["partitions"]] == [2]
    assert_exact(store, CHECKOUT, [first, *more])


def test_other_cloud_events_and_buckets_are_ignored(gcs_bucket):
    name, store = gcs_bucket
    evt = _finalize_event(name)
    _upload_at(store, evt["data"]["name"], 1)
    deleted = dict(evt, type="google.cloud.storage.object.v1.deleted")
    assert gcp.handler(deleted) == {"partitions": []}
    elsewhere = copy.deepcopy(evt)
    elsewhere["data"]["bucket"] = "someone-else"
    assert gcp.handler(elsewhere) == {"partitions": []}
    # GCS triggers cannot filter by prefix: the aggregator's own writes come back as events and are ignored.
    own_write = copy.deepcopy(evt)
    own_write["data"]["name"] = CHECKOUT.manifest_key
    assert gcp.handler(own_write) == {"partitions": []}
    assert list(store.list("merged/")) == []


def test_cloud_scheduler_http_call(gcs_bucket):
    from flask import Flask

    name, store = gcs_bucket
    spec = event("cloud_scheduler_http.json")
    h14 = rawgen.put_many(store, 3)
    bad = CHECKOUT.raw_prefix + "web-1.1.1795615201000.99.pb.gz"
    store.put(bad, b"nope")
    app = Flask("scheduler-test")
    with app.test_request_context(spec["path"], method=spec["method"], headers=spec["headers"], data=spec["body"]):
        from flask import request

        body, status, headers = gcp.handler(request)
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body)["summary"].startswith("1 partitions, 3 inputs merged, 1 quarantined")
    assert_exact(store, CHECKOUT, h14, bad_keys=[bad])


def test_gcs_failure_raises_for_a_retry(gcs_bucket):
    name, store = gcs_bucket
    evt = _finalize_event(name)
    _upload_at(store, evt["data"]["name"], 1)
    store.put(CHECKOUT.manifest_key, b"{}")
    with pytest.raises(CloudprofError, match="merge failed"):
        gcp.handler(evt)


def test_fan_out_steps_as_separate_lambda_invocations(s3_bucket):
    from cloudprof.aggregator import plan_shards

    uploads = rawgen.put_many(s3_bucket, 9)
    plan_key = plan_shards(s3_bucket, CHECKOUT, list(s3_bucket.list(CHECKOUT.raw_prefix)), shard_size=4)
    for index in range(3):  # what a Step Functions Map state would fan out
        assert aws_lambda.handler({"cloudprof": "shard", "plan": plan_key, "index": index}, None)["shard"] == index
    result = aws_lambda.handler({"cloudprof": "reduce", "plan": plan_key}, None)
    assert (result["merged"], result["shards"]) == (9, 3)
    assert_exact(s3_bucket, CHECKOUT, uploads)


def test_manual_invocations(s3_bucket):
    uploads = rawgen.put_many(s3_bucket, 3)
    out = aws_lambda.handler({"cloudprof": "partition", "service": "checkout", "hour": "2026-11-25T14", "kind": "cpu"}, None)
    assert out["merged"] == 3
    assert_exact(s3_bucket, CHECKOUT, uploads)
    out = aws_lambda.handler({"cloudprof": "pending", "lookback_hours": 1}, None)
    assert out["summary"].startswith("0 partitions")
    with pytest.raises(ValueError, match="unrecognised event"):
        aws_lambda.handler({"hello": "world"}, None)
