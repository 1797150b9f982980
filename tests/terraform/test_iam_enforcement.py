"""The module's IAM documents, enforced: moto's server with IAM checks on, each identity a
user whose only policy is the document the module renders (policies/*.json.tftpl).

- the agent uploads its own raw profiles and is denied reading, deleting, listing and
  writing anywhere else, another service's prefix included;
- the reader reads and cannot write;
- the aggregator's real Lambda handler (SQS batch and schedule) plus a sharded merge run
  with nothing but the aggregator policy, and the S3 operations they make, recorded with a
  botocore event hook, need exactly the S3 actions the policy grants: no more, no less.

moto runs in its own process so that switching IAM enforcement on touches no other test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from datetime import timedelta
from fnmatch import fnmatchcase
from urllib.parse import quote

import boto3
import botocore.config
import botocore.exceptions
import pytest

from tests.servers import free_port
from tests.terraform import tf
from tests.terraform.test_consistency import render_schedule_input

ACCOUNT = "123456789012"
REGION = "us-east-1"

# S3 API operation -> the IAM actions it needs (Amazon S3 User Guide, "Policy actions for
# Amazon S3"; CopyObject needs GetObject on the source and PutObject on the target).
S3_ACTIONS = {
    "GetObject": {"s3:GetObject"},
    "HeadObject": {"s3:GetObject"},
    "PutObject": {"s3:PutObject"},
    "CopyObject": {"s3:GetObject", "s3:PutObject"},
    "DeleteObject": {"s3:DeleteObject"},
    "DeleteObjects": {"s3:DeleteObject"},
    "ListObjectsV2": {"s3:ListBucket"},
    "ListObjects": {"s3:ListBucket"},
    "CreateMultipartUpload": {"s3:PutObject"},
    "UploadPart": {"s3:PutObject"},
    "CompleteMultipartUpload": {"s3:PutObject"},
    "AbortMultipartUpload": {"s3:AbortMultipartUpload"},
}


class MotoIAM:
    """A moto server process on 127.0.0.1 whose IAM enforcement can be switched on and off."""

    def __init__(self, tmp_path) -> None:
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log = open(tmp_path / "moto.log", "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "inf"},
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{self.endpoint_url}/moto-api/", timeout=2).read()
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto server did not start: {(tmp_path / 'moto.log').read_text()[-2000:]}")
                time.sleep(0.2)

    def enforce(self, on: bool) -> None:
        """IAM checks for every request from now on (or none): moto's /moto-api/reset-auth."""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/reset-auth", data=b"0" if on else b"inf", method="POST",
                                         headers={"Content-Type": "text/plain"})  # a form body would be parsed away
        urllib.request.urlopen(request, timeout=10).read()

    def client(self, service: str, keys: tuple[str, str] = ("testing", "testing"), session=None):
        session = session or boto3.session.Session()
        return session.client(
            service, endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=keys[0], aws_secret_access_key=keys[1],
            config=botocore.config.Config(retries={"mode": "standard", "max_attempts": 1}),
        )

    def user_with_policy(self, name: str, policy: dict) -> tuple[str, str]:
        """An IAM user whose one and only permission is `policy`; returns its access keys."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName=f"{name}-policy", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return key["AccessKeyId"], key["SecretAccessKey"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def moto_iam(tmp_path_factory):
    server = MotoIAM(tmp_path_factory.mktemp("moto-iam"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def deployment(moto_iam, request):
    """A bucket, queues and the module's three identities, set up before IAM checks switch on.

    Parametrised indirectly with the module's key_prefix ("" by default).
    """
    key_prefix = getattr(request, "param", "")
    prefix = f"{key_prefix}/" if key_prefix else ""
    moto_iam.enforce(False)
    suffix = uuid.uuid4().hex[:8]
    bucket = f"cloudprof-{suffix}"
    moto_iam.client("s3").create_bucket(Bucket=bucket)
    sqs = moto_iam.client("sqs")
    arns = {}
    for name, var in (("raw-uploads", "queue_arn"), ("aggregator-dlq", "dead_letter_queue_arn")):
        url = sqs.create_queue(QueueName=f"cloudprof-{name}-{suffix}")["QueueUrl"]
        arns[var] = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    arns["log_group_arn"] = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/cloudprof-aggregator-{suffix}"
    bucket_arn = f"arn:aws:s3:::{bucket}"
    policies = {
        "agent": tf.aws_policy("agent", bucket_arn=bucket_arn, prefix=prefix, service="checkout"),
        "reader": tf.aws_policy("reader", bucket_arn=bucket_arn, prefix=prefix),
        "aggregator": tf.aws_policy("aggregator", bucket_arn=bucket_arn, prefix=prefix, **arns),
    }
    keys = {name: moto_iam.user_with_policy(f"{name}-{suffix}", policy) for name, policy in policies.items()}
    moto_iam.enforce(True)
    try:
        url = f"s3://{bucket}/{key_prefix}" if key_prefix else f"s3://{bucket}"
        yield {"bucket": bucket, "url": url, "prefix": prefix, "keys": keys, "policies": policies, "server": moto_iam}
    finally:
        moto_iam.enforce(False)


def _store(deployment, who: str):
    from cloudprof.storage import open_store

    return open_store(deployment["url"], client=deployment["server"].client("s3", deployment["keys"][who]))


def _denied(call) -> None:
    with pytest.raises(botocore.exceptions.ClientError) as caught:
        call()
    assert caught.value.response["Error"]["Code"] in ("AccessDenied", "403"), caught.value.response["Error"]


@pytest.mark.parametrize("deployment", ["", "team/profiles"], indirect=True, ids=["bucket-root", "key-prefix"])
def test_the_agent_uploads_its_own_raw_profiles_and_nothing_else(deployment):
    from cloudprof.errors import AccessDenied
    from tests.aggregator import rawgen

    store = _store(deployment, "agent")
    uploads = rawgen.put_many(store, 3, stacks=5)  # agent-shaped: identity metadata, raw/service=checkout/...
    s3 = deployment["server"].client("s3", deployment["keys"]["agent"])
    bucket, own = deployment["bucket"], deployment["prefix"] + uploads[0].key
    if deployment["prefix"]:  # the right service path outside key_prefix is someone else's
        _denied(lambda: s3.put_object(Bucket=bucket, Key=uploads[0].key.replace(".0.pb.gz", ".78.pb.gz"), Body=b"x"))
    s3.put_object(Bucket=bucket, Key=own.replace(".0.pb.gz", ".77.pb.gz"), Body=b"x", IfNoneMatch="*")

    _denied(lambda: s3.get_object(Bucket=bucket, Key=own))
    _denied(lambda: s3.delete_object(Bucket=bucket, Key=own))
    _denied(lambda: s3.list_objects_v2(Bucket=bucket, Prefix="raw/"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key=own.replace("service=checkout", "service=search"), Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key=own.replace("service=checkout/", "service=checkout-evil/"), Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key=deployment["prefix"] + "merged/service=checkout/date=2026-11-25/hour=14/cpu.pb.gz", Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key=deployment["prefix"] + "reports/service=checkout/report.json", Body=b"{}"))
    with pytest.raises(AccessDenied):
        store.get(uploads[0].key)

    reader = _store(deployment, "reader")
    assert {info.key for info in reader.list("raw/service=checkout/")} >= {u.key for u in uploads}
    assert reader.get(uploads[0].key) == uploads[0].data


def test_the_reader_reads_and_cannot_write(deployment):
    from tests.aggregator import rawgen

    rawgen.put_many(_store(deployment, "agent"), 1, stacks=5)
    s3 = deployment["server"].client("s3", deployment["keys"]["reader"])
    bucket = deployment["bucket"]
    (listed,) = s3.list_objects_v2(Bucket=bucket, Prefix="raw/")["Contents"]
    s3.get_object(Bucket=bucket, Key=listed["Key"])
    _denied(lambda: s3.put_object(Bucket=bucket, Key="merged/x.pb.gz", Body=b"x"))
    _denied(lambda: s3.put_object(Bucket=bucket, Key="reports/service=checkout/x.json", Body=b"{}"))
    _denied(lambda: s3.delete_object(Bucket=bucket, Key=listed["Key"]))


class CallRecorder:
    """A botocore event hook: every S3/SQS operation any new boto3 session's clients make, with its key."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []

    def __call__(self, params, model, **_) -> None:
        service = model.service_model.service_name
        key = params.get("Key") or params.get("Prefix") or ""
        self.calls.append((service, model.name, key))
        if model.name == "CopyObject":
            source = params["CopySource"]
            source_key = source["Key"] if isinstance(source, dict) else source.split("/", 1)[1]
            self.calls.append((service, "CopyObject:source", source_key))

    def session_class(self):
        recorder = self

        class RecordingSession(boto3.session.Session):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, **kwargs)
                self.events.register("before-parameter-build.s3", recorder)
                self.events.register("before-parameter-build.sqs", recorder)

        return RecordingSession


def _sqs_event(bucket: str, keys: list[str]) -> dict:
    """An SQS batch of S3 notifications, one message per upload, as Lambda delivers it."""
    records = []
    for i, key in enumerate(keys):
        body = {"Records": [{
            "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": REGION, "eventTime": "2026-11-25T14:01:02.345Z",
            "eventName": "ObjectCreated:Put",
            "s3": {"s3SchemaVersion": "1.0", "configurationId": "cloudprof-raw-uploads",
                   "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
                   "object": {"key": quote(key, safe="/"), "size": 100, "sequencer": f"{i:016X}"}},
        }]}
        records.append({
            "messageId": str(uuid.uuid4()), "receiptHandle": "handle", "body": json.dumps(body),
            "attributes": {"ApproximateReceiveCount": "1"}, "messageAttributes": {}, "md5OfBody": "",
            "eventSource": "aws:sqs", "eventSourceARN": f"arn:aws:sqs:{REGION}:{ACCOUNT}:cloudprof-raw-uploads",
            "awsRegion": REGION,
        })
    return {"Records": records}


def _allowed(policy: dict, action: str, arn: str) -> bool:
    for statement in tf.statements(policy):
        if statement["Effect"] == "Allow" and action in tf.as_list(statement["Action"]):
            if any(fnmatchcase(arn, pattern) for pattern in tf.as_list(statement["Resource"])):
                return True
    return False


@pytest.mark.slow
def test_the_aggregator_needs_exactly_the_s3_actions_its_policy_grants(deployment, monkeypatch):
    from cloudprof.aggregator import MergeOptions, Partition, merge_partition
    from cloudprof.aggregator.handlers import aws_lambda
    from cloudprof.storage import open_store
    from tests.aggregator import rawgen

    server, bucket = deployment["server"], deployment["bucket"]
    agent = _store(deployment, "agent")
    hours = [rawgen.HOUR, rawgen.HOUR + timedelta(hours=1), rawgen.HOUR + timedelta(hours=2)]
    notified = rawgen.put_many(agent, 4, hour=hours[0], stacks=5)
    bad = notified[0].key.replace(".0.pb.gz", ".999.pb.gz")
    agent.put(bad, b"not a profile")  # the aggregator must move it to quarantine/
    swept = rawgen.put_many(agent, 3, hour=hours[1], stacks=5)
    sharded = rawgen.put_many(agent, 5, hour=hours[2], stacks=5)

    recorder = CallRecorder()
    access_key, secret = deployment["keys"]["aggregator"]
    for name, value in {"AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret, "AWS_DEFAULT_REGION": REGION,
                        "AWS_ENDPOINT_URL": server.endpoint_url, "CLOUDPROF_STORAGE": deployment["url"]}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.setattr(boto3.session, "Session", recorder.session_class())

    # 1. S3 notifications through SQS, as the event source mapping delivers them.
    answer = aws_lambda.handler(_sqs_event(bucket, [u.key for u in notified] + [bad]), None)
    assert answer == {"batchItemFailures": []}
    # 2. A partition big enough to fan out into shards (threshold lowered for the test).
    merge_partition(open_store(deployment["url"]), "checkout", hours[2], "cpu",
                    options=MergeOptions(shard_threshold=2, shard_size=2))
    # 3. The hourly schedule (20 past, looking back 2 hours), with the event the EventBridge
    #    input transformer builds: it finds the one partition nobody merged yet.
    scheduled = render_schedule_input(time=(hours[2] + timedelta(minutes=20)).strftime("%Y-%m-%dT%H:%M:%SZ"), lookback_hours=2)
    summary = aws_lambda.handler(scheduled, None)
    assert [p["hour"] for p in summary["partitions"] if p["merged"]] == [hours[1].strftime("%Y-%m-%dT%H")], summary
    # 4. A late upload into the first hour: the rerun folds it in and reconciles the quarantine.
    late = rawgen.put_raw(agent, hour=hours[0], index=10, stacks=5)
    notified.append(late)
    assert aws_lambda.handler(_sqs_event(bucket, [late.key]), None) == {"batchItemFailures": []}
    monkeypatch.undo()

    reader = _store(deployment, "reader")
    for hour, uploads in zip(hours, (notified, swept, sharded)):
        manifest = json.loads(reader.get(Partition("checkout", hour, "cpu").manifest_key))
        listed = json.dumps(manifest)
        assert all(u.key in listed for u in uploads), f"{hour}: not every input is in the manifest"
    assert bad.rsplit("/", 1)[-1] in json.dumps(json.loads(reader.get(Partition("checkout", hours[0], "cpu").manifest_key)))

    policy = deployment["policies"]["aggregator"]
    used: set[str] = set()
    requests: list[tuple[str, str]] = []  # (IAM action, ARN) of every recorded call
    for service, operation, key in recorder.calls:
        assert service == "s3", f"the aggregator itself calls {service}:{operation}; its role only lets Lambda poll SQS"
        if operation == "CopyObject:source":
            needed, arn = {"s3:GetObject"}, f"arn:aws:s3:::{bucket}/{key}"
        else:
            assert operation in S3_ACTIONS, f"unmapped S3 operation {operation}: add it here and to the aggregator policy"
            needed = S3_ACTIONS[operation] - ({"s3:GetObject"} if operation == "CopyObject" else set())
            arn = f"arn:aws:s3:::{bucket}" if operation.startswith("List") else f"arn:aws:s3:::{bucket}/{key}"
        for action in needed:
            assert _allowed(policy, action, arn), f"{operation} {key!r} needs {action} on {arn}"
            requests.append((action, arn))
        used |= needed
    granted = {a for a in (x for s in tf.statements(policy) for x in tf.as_list(s["Action"])) if a.startswith("s3:")}
    assert used == granted, f"granted but never used: {sorted(granted - used)}; used but not granted: {sorted(used - granted)}"
    # Finer: every (action, resource pattern) pair the policy grants on S3 is exercised.
    for statement in tf.statements(policy):
        for action in (a for a in tf.as_list(statement["Action"]) if a.startswith("s3:")):
            for pattern in tf.as_list(statement["Resource"]):
                assert any(a == action and fnmatchcase(arn, pattern) for a, arn in requests), (
                    f"{action} on {pattern} is granted but the aggregator never needed it")
