"""The uploader against moto's real S3 server on 127.0.0.1, through a proxy that breaks it on purpose.

In every case: no exception reaches the app, and every profile is delivered
exactly once (in order) or counted as dropped.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from cloudprof.agent.uploader import Uploader
from cloudprof.storage import open_store
from tests.servers import S3_DENIED, S3_SLOWDOWN, FaultProxy

N = 12


@pytest.fixture
def s3(moto_server, fault_proxy):
    """(store through the proxy, direct client, bucket, proxy); one try per request: retries are ours to test."""
    bucket = moto_server.new_bucket("up")
    store = open_store(f"s3://{bucket}/profiles", endpoint_url=fault_proxy.endpoint_url, max_attempts=1,
                       read_timeout=10)
    return store, moto_server.client(), bucket, fault_proxy


_started: list[Uploader] = []


@pytest.fixture(autouse=True)
def _close_uploaders():
    """A test that fails half-way must not leave its worker retrying into the next tests (which count threads)."""
    yield
    while _started:
        _started.pop().close(timeout=0.5)


def _uploader(store, tmp_path, **kwargs) -> Uploader:
    options = dict(spool_dir=str(tmp_path / "spool"), backoff_base=0.01, backoff_max=0.1,
                   spool_after_failures=2, poll_interval=0.02)
    options.update(kwargs)
    up = Uploader(store, **options).start()
    _started.append(up)
    return up


def _until(up, **least) -> dict:
    """Wait (10 s at most) until each named counter reaches its value; the counters then. A slow box makes each
    failed attempt slower, not fewer: the tests count attempts, not time."""
    deadline = time.monotonic() + 10.0
    while True:
        counters = up.counters()
        if all(counters[name] >= value for name, value in least.items()) or time.monotonic() > deadline:
            return counters
        time.sleep(0.02)


def _keys(client, bucket) -> list[str]:
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="profiles/")
    return [item["Key"].removeprefix("profiles/") for page in pages for item in page.get("Contents", ())]


def _record_puts(proxy: FaultProxy, fault=None):
    """A proxy rule that applies `fault` and records, in arrival order, the object PUTs it lets through."""
    order: list[str] = []
    lock = threading.Lock()

    def rule(method, path, headers):
        action = fault(method, path, headers) if fault else None
        if action is None and method == "PUT":
            with lock:
                order.append(path.split("/profiles/", 1)[-1].split("?")[0])
        return action

    proxy.rule = rule
    return order


def _profiles(n=N, start=0):
    return [(f"raw/p{i:03d}.pb.gz", b"profile %d " % i * 50) for i in range(start, start + n)]


def _assert_delivered_once_in_order(client, bucket, profiles, order):
    assert _keys(client, bucket) == sorted(key for key, _ in profiles)
    for key, data in profiles:
        assert client.get_object(Bucket=bucket, Key="profiles/" + key)["Body"].read() == data
    delivered = [key for key in order if key in dict(profiles)]
    # Each profile went through exactly once more than any failed attempt at it, and in submission order.
    firsts = list(dict.fromkeys(delivered))
    assert firsts == [key for key, _ in profiles]


def test_storage_down_then_back(s3, tmp_path):
    store, client, bucket, proxy = s3
    down = threading.Event()
    down.set()
    order = _record_puts(proxy, lambda m, p, h: ("drop",) if down.is_set() else None)
    up = _uploader(store, tmp_path)
    profiles = _profiles()
    for key, data in profiles[: N // 2]:
        assert up.submit(key, data, {"service": "svc"})
    counters = _until(up, spool_files=N // 2)
    assert counters["spool_files"] == N // 2 and counters["uploaded"] == 0
    assert up.flush(0.1) is False
    down.clear()
    for key, data in profiles[N // 2:]:
        assert up.submit(key, data, {"service": "svc"})
    assert up.flush(10.0)
    assert order == [key for key, _ in profiles]  # nothing twice, oldest first
    _assert_delivered_once_in_order(client, bucket, profiles, order)
    counters = up.counters()
    assert counters["uploaded"] == N and counters["dropped"] == counters["failed"] == 0
    assert counters["replayed"] >= N // 2 and counters["failed_unavailable"] >= 2
    assert client.head_object(Bucket=bucket, Key="profiles/raw/p000.pb.gz")["Metadata"] == {"service": "svc"}
    assert up.close()


def test_slow_storage_never_holds_up_the_app(s3, tmp_path):
    store, client, bucket, proxy = s3
    release = threading.Event()

    def slow(method, path, headers):
        release.wait(30)  # the server takes its time (bounded, in case the test fails)
        return None

    order = _record_puts(proxy, slow)
    up = _uploader(store, tmp_path)
    profiles = _profiles()
    results = [up.submit(key, data) for key, data in profiles]
    # All submits came back while storage had not answered a single request.
    assert all(results) and order == [] and proxy.forwarded == 0
    release.set()
    assert up.flush(10.0)
    _assert_delivered_once_in_order(client, bucket, profiles, order)
    assert up.counters()["uploaded"] == N
    up.close()


def test_throttling_and_5xx_are_retried(s3, tmp_path):
    store, client, bucket, proxy = s3
    answers = iter([("status", 503, S3_SLOWDOWN)] * 3 + [("status", 500, b"")] * 2)
    lock = threading.Lock()

    def throttle(method, path, headers):
        with lock:
            return next(answers, None) if method == "PUT" else None

    order = _record_puts(proxy, throttle)
    up = _uploader(store, tmp_path, spool_after_failures=10)
    profiles = _profiles()
    for key, data in profiles:
        up.submit(key, data)
    assert up.flush(10.0)
    _assert_delivered_once_in_order(client, bucket, profiles, order)
    counters = up.counters()
    assert counters["retried"] == 5 and counters["failed_unavailable"] == 5
    assert counters["uploaded"] == N and counters["spooled"] == 0
    up.close()


def test_denied_access_logs_one_line_and_spools(s3, tmp_path, caplog):
    store, client, bucket, proxy = s3
    denied = threading.Event()
    denied.set()
    order = _record_puts(proxy, lambda m, p, h: ("status", 403, S3_DENIED) if denied.is_set() else None)
    up = _uploader(store, tmp_path, backoff_max=0.05)
    profiles = _profiles()
    with caplog.at_level(logging.WARNING, logger="cloudprof.uploader"):
        for key, data in profiles:
            assert up.submit(key, data)
        counters = _until(up, failed_auth=3, spool_files=N)
        assert up.flush(0.1) is False
        assert counters["failed_auth"] >= 3  # it kept trying ...
        lines = [r.getMessage() for r in caplog.records if r.name == "cloudprof.uploader"]
        assert len(lines) == 1, lines  # ... and said so once
        assert "access denied" in lines[0] and "s3:PutObject" in lines[0] and bucket in lines[0]
        assert counters["spool_files"] == N and counters["uploaded"] == 0
    denied.clear()
    assert up.flush(10.0)
    _assert_delivered_once_in_order(client, bucket, profiles, order)
    up.close()


def test_missing_credentials_log_one_line(moto_server, tmp_path, monkeypatch, caplog):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    import boto3

    session = boto3.session.Session(aws_access_key_id=None, aws_secret_access_key=None, region_name="us-east-1")
    store = open_store(f"s3://{moto_server.new_bucket()}/p", session=session, endpoint_url=moto_server.endpoint_url,
                       max_attempts=1)
    up = _uploader(store, tmp_path, backoff_max=0.05)
    with caplog.at_level(logging.WARNING, logger="cloudprof.uploader"):
        for key, data in _profiles(4):
            assert up.submit(key, data)
        counters = _until(up, failed_auth=2, spool_files=4)
        assert up.flush(0.1) is False
    lines = [r.getMessage() for r in caplog.records if r.name == "cloudprof.uploader"]
    assert len(lines) == 1 and "no AWS credentials" in lines[0], lines
    assert counters["failed_auth"] >= 2 and counters["spool_files"] == 4
    up.close(timeout=0.2)


def test_spool_full_drops_oldest_counted_and_disk_stays_bounded(s3, tmp_path):
    store, client, bucket, proxy = s3
    down = threading.Event()
    down.set()
    order = _record_puts(proxy, lambda m, p, h: ("drop",) if down.is_set() else None)
    cap = 4 * 1024
    up = _uploader(store, tmp_path, max_spool_bytes=cap, spool_after_failures=1)
    profiles = _profiles(30)
    for key, data in profiles:
        assert up.submit(key, data)
        up.flush(0.02)
        on_disk = sum(p.stat().st_size for p in (tmp_path / "spool").rglob("*") if p.is_file() and p.name != ".lock")
        assert on_disk <= cap
    up.flush(0.3)
    spooled = up.counters()["spool_files"]
    assert 0 < spooled < 30
    down.clear()
    assert up.flush(10.0)
    counters = up.counters()
    assert counters["uploaded"] + counters["dropped"] == 30 and counters["dropped"] > 0
    survivors = profiles[-counters["uploaded"]:]
    _assert_delivered_once_in_order(client, bucket, survivors, order)
    up.close()


def test_gcs_down_then_back(fake_gcs, tmp_path):
    """The same promise on GCS: fake-gcs-server behind the proxy, refusing and then answering."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from cloudprof.storage.gcs import GCSStore

    bucket = fake_gcs.new_bucket("up")
    down = threading.Event()
    down.set()
    uploads = []

    def rule(method, path, headers):
        if down.is_set():
            return ("drop",)
        if method == "POST" and "/upload/" in path:
            uploads.append(path)
        return None

    with FaultProxy(fake_gcs.endpoint_url, rule) as proxy:
        client = storage.Client(project="test", credentials=AnonymousCredentials(),
                                client_options={"api_endpoint": proxy.endpoint_url})
        store = GCSStore(bucket, "profiles", client=client, retry_deadline=0.2)
        up = _uploader(store, tmp_path)
        profiles = _profiles(8)
        for key, data in profiles[:4]:
            assert up.submit(key, data, {"service": "svc"})
        assert _until(up, spool_files=4)["spool_files"] == 4
        assert up.flush(0.1) is False
        down.clear()
        for key, data in profiles[4:]:
            assert up.submit(key, data, {"service": "svc"})
        assert up.flush(15.0)
        up.close()
    assert len(uploads) == len(profiles)  # each object uploaded once
    direct = fake_gcs.client().bucket(bucket)
    blobs = list(direct.list_blobs())
    assert sorted(b.name for b in blobs) == sorted("profiles/" + key for key, _ in profiles)
    # Generations grow with time of writing: sorted by generation is upload order.
    assert [b.name for b in sorted(blobs, key=lambda b: b.generation)] == ["profiles/" + k for k, _ in profiles]
    for key, data in profiles:
        assert direct.blob("profiles/" + key).download_as_bytes() == data


def test_nothing_listening_then_back(s3, tmp_path):
    """Connections refused (no server at all), then the endpoint comes back on the same port."""
    store, client, bucket, proxy = s3
    order = _record_puts(proxy)
    proxy.refuse()
    up = _uploader(store, tmp_path)
    profiles = _profiles(6)
    for key, data in profiles[:3]:
        assert up.submit(key, data)
    assert _until(up, spool_files=3)["spool_files"] == 3
    assert up.flush(0.1) is False
    proxy.accept()
    for key, data in profiles[3:]:
        assert up.submit(key, data)
    assert up.flush(10.0)
    assert order == [key for key, _ in profiles]
    _assert_delivered_once_in_order(client, bucket, profiles, order)
    up.close()
