from __future__ import annotations

import uuid

import pytest

from cloudprof.storage import open_store


@pytest.fixture
def local_url(tmp_path) -> str:
    return f"file://{tmp_path}/store"


@pytest.fixture
def local_store(local_url):
    return open_store(local_url)


@pytest.fixture
def memory_store():
    return open_store(f"memory://agg-{uuid.uuid4().hex}")


@pytest.fixture(params=["local", "s3-server", "gcs"])
def shared_store(request, tmp_path, monkeypatch):
    """A store other processes can open too: (url, store). S3 is moto's HTTP server, GCS fake-gcs-server.

    Child processes inherit the endpoint through the environment (AWS_ENDPOINT_URL_S3, STORAGE_EMULATOR_HOST).
    """
    if request.param == "local":
        url = f"file://{tmp_path}/store"
        return url, open_store(url)
    if request.param == "s3-server":
        server = request.getfixturevalue("moto_server")
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", server.endpoint_url)
        url = f"s3://{server.new_bucket('agg')}/pfx"
        return url, open_store(url)
    server = request.getfixturevalue("fake_gcs")
    url = f"gs://{server.new_bucket('agg')}/pfx"
    return url, open_store(url)
