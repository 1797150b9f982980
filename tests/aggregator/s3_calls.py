"""Which S3 API calls the aggregator makes, recorded from real runs against moto (for least-privilege IAM).

`recorded_s3_operations()` -> set of S3 operation names (PutObject, ...), and
`record_aggregator_calls()` -> the full record (operations, the key areas each
touches, IAM actions, SQS notes); tests/terraform imports these to check the
Lambda role. The record comes from a botocore 'before-call' hook on the store's
own client while the Lambda handler and merge_partition run the real flows:
SQS batch of S3 notifications (first merge, rerun, late inputs, quarantine),
the EventBridge schedule (pending scan) and a sharded merge.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import quote_plus

__all__ = ["IAM_ACTIONS", "record_aggregator_calls", "recorded_s3_operations", "write_artifact"]

# S3 API operation -> IAM action it needs (docs.aws.amazon.com/AmazonS3/latest/API/API_Operations.html).
IAM_ACTIONS = {
    "CopyObject": ["s3:GetObject", "s3:PutObject"],
    "DeleteObject": ["s3:DeleteObject"],
    "GetObject": ["s3:GetObject"],
    "HeadObject": ["s3:GetObject"],
    "ListObjectsV2": ["s3:ListBucket"],
    "PutObject": ["s3:PutObject"],
}
# The SQS event source mapping, not our code, polls the queue; the function role needs these
# (AWSLambdaSQSQueueExecutionRole). The aggregator itself makes no SQS call.
SQS_EVENT_SOURCE_ACTIONS = ["sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ReceiveMessage"]

_FAKE_AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
             "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true",
             "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}
_EVENTS = Path(__file__).resolve().parent.parent / "events"


@contextlib.contextmanager
def _env(values: dict[str, str], unset=("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")):
    saved = {k: os.environ.get(k) for k in [*values, *unset]}
    os.environ.update(values)
    for name in unset:
        os.environ.pop(name, None)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class CallRecorder:
    """Records (operation, key area) for every call a boto3 client makes."""

    def __init__(self, client, prefix: str) -> None:
        self.calls: list[tuple[str, str]] = []
        self._prefix = prefix
        self._area_of_next: str = ""
        # The API parameters (Key, Prefix) are visible before the request is built; the call itself is
        # counted at 'before-call', which fires once per operation actually sent.
        client.meta.events.register("before-parameter-build.s3", self._parameters)
        client.meta.events.register("before-call.s3", self._before_call)

    def _parameters(self, params, model, **_):
        self._area_of_next = self._area(params)

    def _area(self, params: dict) -> str:
        key = params.get("Key") or params.get("Prefix") or ""
        key = key[len(self._prefix):] if key.startswith(self._prefix) else key
        return key.split("/", 1)[0] + "/" if "/" in key else key

    def _before_call(self, model, **_):
        self.calls.append((model.name, self._area_of_next))


def _sqs_event(bucket: str, keys: list[str]) -> dict:
    template = json.loads((_EVENTS / "s3_notification_via_sqs.json").read_text())
    message = template["Records"][0]
    record = json.loads(message["body"])["Records"][0]
    records = []
    for i, key in enumerate(keys):
        rec = copy.deepcopy(record)
        rec["s3"]["bucket"]["name"] = bucket
        rec["s3"]["bucket"]["arn"] = f"arn:aws:s3:::{bucket}"
        rec["s3"]["object"]["key"] = quote_plus(key, safe="/")
        records.append(dict(message, messageId=f"msg-{i}", body=json.dumps({"Records": [rec]})))
    return {"Records": records}


@functools.lru_cache(maxsize=1)
def record_aggregator_calls() -> dict:
    import boto3
    from moto import mock_aws

    from cloudprof.aggregator import MergeOptions, Partition, merge_partition
    from cloudprof.aggregator.handlers import aws_lambda, common
    from cloudprof.storage import open_store
    from tests.aggregator import rawgen

    bucket, prefix = "cloudprof-calls", "profiles"
    url = f"s3://{bucket}/{prefix}"
    with _env({**_FAKE_AWS, "CLOUDPROF_STORAGE": url}), mock_aws():
        boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=bucket)
        agent_side = open_store(url)  # uploads are the agent's calls, not the aggregator's
        store = open_store(url)
        recorder = CallRecorder(store.client, prefix + "/")
        saved = dict(common._STORES)
        common._STORES.clear()
        common._STORES[url] = store
        try:
            ups = rawgen.put_many(agent_side, 5)
            bad = Partition("checkout", rawgen.HOUR, "cpu").raw_prefix + "web-1.1.1795615201000.99.pb.gz"
            agent_side.put(bad, b"")
            full = lambda keys: [f"{prefix}/{k}" for k in keys]  # noqa: E731
            assert aws_lambda.handler(_sqs_event(bucket, full([u.key for u in ups] + [bad])), None) == {"batchItemFailures": []}
            assert aws_lambda.handler(_sqs_event(bucket, full([ups[0].key])), None) == {"batchItemFailures": []}
            late = rawgen.put_many(agent_side, 2, start=5)
            aws_lambda.handler(_sqs_event(bucket, full([u.key for u in late])), None)
            rawgen.put_many(agent_side, 3, "search", hour=rawgen.HOUR + timedelta(hours=1))
            aws_lambda.handler(json.loads((_EVENTS / "eventbridge_scheduled.json").read_text()), None)
            rawgen.put_many(agent_side, 12, "sharded")
            merge_partition(store, "sharded", rawgen.HOUR, "cpu", options=MergeOptions(shard_threshold=5, shard_size=4))
        finally:
            common._STORES.clear()
            common._STORES.update(saved)
    operations = sorted({op for op, _ in recorder.calls})
    areas: dict[str, set[str]] = {}
    for op, area in recorder.calls:
        areas.setdefault(op, set()).add(area)
    return {
        "s3_operations": operations,
        "key_areas_by_operation": {op: sorted(a) for op, a in sorted(areas.items())},
        "iam_actions": sorted({a for op in operations for a in IAM_ACTIONS.get(op, [f"s3:{op}"])}),
        "sqs_operations_by_aggregator": [],
        "sqs_event_source_mapping_actions": SQS_EVENT_SOURCE_ACTIONS,
        "notes": "Conditional writes (If-Match/If-None-Match on PutObject, CopySourceIfMatch on CopyObject) need no extra "
                 "IAM action. raw/ is read and (for quarantine) deleted; merged/ and quarantine/ are written.",
    }


def recorded_s3_operations() -> set[str]:
    """The S3 operation names the aggregator and its Lambda handler call."""
    return set(record_aggregator_calls()["s3_operations"])


def write_artifact() -> Path:
    from tests import support

    path = support.artifact_path("aggregator_s3_calls.json")
    path.write_text(json.dumps(record_aggregator_calls(), indent=2) + "\n")
    return path
