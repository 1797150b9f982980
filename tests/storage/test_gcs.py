"""What only the GCS backend has to get right: generations as etags, the emulator switch, errors a user can act on."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from cloudprof.errors import AccessDenied, NotFound, PreconditionFailed, StorageUnavailable
from cloudprof.storage import open_store
from cloudprof.storage.gcs import GCSStore
from tests.servers import FaultProxy


def test_etag_is_the_generation(fake_gcs):
    bucket = fake_gcs.new_bucket()
    store = open_store(f"gs://{bucket}/p")
    assert isinstance(store, GCSStore) and store.url == f"gs://{bucket}/p"
    info = store.put("k", b"v")
    blob = fake_gcs.client().bucket(bucket).get_blob("p/k")
    assert info.etag == str(blob.generation) == store.head("k").etag
    with pytest.raises(PreconditionFailed, match="not a GCS generation"):
        store.put("k", b"w", if_match='"d41d8cd98f00b204e9800998ecf8427e"')


def test_our_client_starts_no_threads_of_its_own(fake_gcs, monkeypatch):
    """google-cloud-storage 3.x fetches bucket metadata for tracing in a background thread: an agent uploading
    from inside the user's app must not start threads (or make requests) beyond its own."""
    import threading

    monkeypatch.delenv("DISABLE_GCS_PYTHON_CLIENT_OTEL_BUCKET_METADATA", raising=False)  # see tests/conftest.py
    bucket = fake_gcs.new_bucket()
    started = []
    original = threading.Thread.start

    def start(self):
        started.append(self.name)
        original(self)

    monkeypatch.setattr(threading.Thread, "start", start)
    store = open_store(f"gs://{bucket}/p")
    store.put("k", b"v")
    assert store.get("k") == b"v" and [o.key for o in store.list("")] == ["k"]
    assert started == []


def test_passed_in_client_without_the_environment(fake_gcs, monkeypatch):
    bucket = fake_gcs.new_bucket()
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    client = fake_gcs.client()
    store = open_store(f"gs://{bucket}", client=client)
    store.put("a/b", b"1", metadata={"service": "s"})
    assert store.client is client
    assert [o.key for o in store.list("a/")] == ["a/b"] and store.head("a/b").metadata == {"service": "s"}


def test_missing_bucket_is_not_found(fake_gcs):
    with pytest.raises(NotFound):
        open_store("gs://cp-no-such-bucket/p").put("k", b"v")


def test_denied_names_the_permission(fake_gcs):
    bucket = fake_gcs.new_bucket()
    denied = b'{"error": {"code": 403, "message": "caller does not have storage.objects.create access"}}'
    with FaultProxy(fake_gcs.endpoint_url, lambda m, p, h: ("status", 403, denied)) as proxy:
        store = GCSStore(bucket, "raw", client=_client_at(proxy.endpoint_url))
        with pytest.raises(AccessDenied) as caught:
            store.put("k", b"v")
        with pytest.raises(AccessDenied, match="storage.objects.list"):
            list(store.prefixes())
    assert f"gs://{bucket}/raw/k" in str(caught.value) and "storage.objects.create" in str(caught.value)


def test_transient_errors_are_retried_then_unavailable(fake_gcs):
    bucket = fake_gcs.new_bucket()
    fake_gcs.client().bucket(bucket).blob("k").upload_from_string(b"v")
    answers = iter([("status", 503, b"{}"), ("status", 429, b"{}")])
    with FaultProxy(fake_gcs.endpoint_url, lambda m, p, h: next(answers, None)) as proxy:
        store = GCSStore(bucket, client=_client_at(proxy.endpoint_url))
        assert store.get("k") == b"v"  # two transient failures, retried by the client
        assert next(answers, None) is None, "both transient failures were served"
        # >= rather than ==: the client may also make its one background bucket lookup through the proxy.
        assert proxy.requests >= 3
        proxy.rule = lambda m, p, h: ("status", 503, b"{}")
        with pytest.raises(StorageUnavailable):
            GCSStore(bucket, client=_client_at(proxy.endpoint_url), retry_deadline=0.3).get("k")


def test_no_credentials_is_access_denied(monkeypatch, tmp_path):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    store = open_store("gs://some-bucket/p")  # building the store needs no credentials ...
    with pytest.raises(AccessDenied, match="no Google credentials"):
        store.put("k", b"v")  # ... using it does, and says so


def test_without_the_sdk_the_advice_is_to_install_the_extra():
    script = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.startswith(("google.cloud", "google.api_core", "google.auth")):
                    raise ImportError("blocked: " + name)
        sys.meta_path.insert(0, Block())
        from cloudprof.errors import ConfigError
        from cloudprof.storage import open_store
        try:
            open_store("gs://bucket/prefix")
        except ConfigError as exc:
            print(exc)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert "pip install 'cloudprof[gcs]'" in out.stdout, out.stderr


def _client_at(endpoint: str):
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="test", credentials=AnonymousCredentials(), client_options={"api_endpoint": endpoint})
