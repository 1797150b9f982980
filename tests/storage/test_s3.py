"""What only the S3 backend has to get right: boto3's own configuration, encryption, and errors a user can act on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cloudprof.errors import AccessDenied, ConfigError, NotFound, StorageUnavailable
from cloudprof.storage import open_store
from cloudprof.storage.s3 import S3Store
from tests.servers import S3_DENIED, S3_SLOWDOWN, FaultProxy, free_port, unique_bucket


@pytest.fixture
def bucket(aws_mock):
    import boto3

    name = unique_bucket("s3")
    boto3.client("s3", region_name="us-east-1").create_bucket(Bucket=name)
    return name


def test_standard_retry_mode_and_url(bucket):
    store = open_store(f"s3://{bucket}/some/prefix/")
    assert isinstance(store, S3Store) and store.url == f"s3://{bucket}/some/prefix"
    assert store.client.meta.config.retries == {"mode": "standard", "total_max_attempts": 3}
    assert open_store(f"s3://{bucket}").url == f"s3://{bucket}"


def test_keys_live_under_the_prefix(bucket):
    import boto3

    open_store(f"s3://{bucket}/team-a").put("raw/k", b"v")
    raw = boto3.client("s3", region_name="us-east-1").list_objects_v2(Bucket=bucket)["Contents"]
    assert [o["Key"] for o in raw] == ["team-a/raw/k"]
    assert [o.key for o in open_store(f"s3://{bucket}/team-a").list()] == ["raw/k"]
    assert [o.key for o in open_store(f"s3://{bucket}").list()] == ["team-a/raw/k"]


@pytest.mark.parametrize("sse,kms", [("AES256", None), ("aws:kms", "alias/cloudprof")])
def test_server_side_encryption(bucket, sse, kms):
    import boto3

    if kms:
        key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        boto3.client("kms", region_name="us-east-1").create_alias(AliasName=kms, TargetKeyId=key)
    store = open_store(f"s3://{bucket}/p", sse=sse, sse_kms_key_id=kms)
    store.put("k", b"secret")
    store.move("k", "k2")
    client = boto3.client("s3", region_name="us-east-1")
    for key in ("p/k2",):
        head = client.head_object(Bucket=bucket, Key=key)
        assert head["ServerSideEncryption"] == sse
        if kms:
            assert head["SSEKMSKeyId"] == kms
    with pytest.raises(ConfigError):
        open_store(f"s3://{bucket}", sse="rot13")


def test_passed_in_session_and_client(bucket):
    import boto3

    session = boto3.session.Session(region_name="us-east-1")
    open_store(f"s3://{bucket}", session=session).put("a", b"1")
    client = session.client("s3")
    store = open_store(f"s3://{bucket}", client=client)
    assert store.client is client and store.get("a") == b"1"


def test_endpoint_from_boto3s_own_environment(moto_server, monkeypatch):
    bucket = moto_server.new_bucket()
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.endpoint_url)
    store = open_store(f"s3://{bucket}/p")
    assert store.client.meta.endpoint_url == moto_server.endpoint_url
    store.put("k", b"through the env endpoint")
    assert moto_server.client().get_object(Bucket=bucket, Key="p/k")["Body"].read() == b"through the env endpoint"


def test_missing_bucket_is_not_found(aws_mock):
    store = open_store("s3://no-such-bucket-here/p")
    with pytest.raises(NotFound, match="bucket 'no-such-bucket-here' does not exist"):
        store.put("k", b"v")


def test_denied_names_the_permission(moto_server):
    bucket = moto_server.new_bucket()
    with FaultProxy(moto_server.endpoint_url, lambda m, p, h: ("status", 403, S3_DENIED)) as proxy:
        store = open_store(f"s3://{bucket}/raw", endpoint_url=proxy.endpoint_url, max_attempts=1)
        with pytest.raises(AccessDenied) as put:
            store.put("service=x/k", b"v")
        with pytest.raises(AccessDenied) as listing:
            list(store.list())
        with pytest.raises(AccessDenied, match="s3:ListBucket"):
            list(store.prefixes("service=x/"))
    message = str(put.value)
    assert f"s3://{bucket}/raw/service=x/k" in message and "s3:PutObject" in message
    assert f"arn:aws:s3:::{bucket}/raw/*" in message
    assert "s3:ListBucket" in str(listing.value)


def test_throttling_and_unreachable_are_unavailable(moto_server):
    bucket = moto_server.new_bucket()
    with FaultProxy(moto_server.endpoint_url, lambda m, p, h: ("status", 503, S3_SLOWDOWN)) as proxy:
        store = open_store(f"s3://{bucket}", endpoint_url=proxy.endpoint_url, max_attempts=2)
        with pytest.raises(StorageUnavailable, match="SlowDown"):
            store.put("k", b"v")
        assert proxy.requests == 2  # botocore's standard mode retried once
    dead = open_store(f"s3://{bucket}", endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1)
    with pytest.raises(StorageUnavailable, match="unreachable"):
        dead.get("k")


def test_no_credentials_is_access_denied(moto_server, monkeypatch):
    import boto3

    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    store = open_store(f"s3://{moto_server.new_bucket()}", session=boto3.session.Session(region_name="us-east-1"),
                       endpoint_url=moto_server.endpoint_url)
    with pytest.raises(AccessDenied, match="no AWS credentials"):
        store.put("k", b"v")


def test_without_boto3_the_advice_is_to_install_the_extra():
    script = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("boto3", "botocore"):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from cloudprof.errors import ConfigError
        from cloudprof.storage import open_store
        try:
            open_store("s3://bucket/prefix")
        except ConfigError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "pip install 'cloudprof[s3]'" in out.stdout, out.stderr
