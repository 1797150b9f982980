from __future__ import annotations

import uuid

import pytest

from cloudprof.storage import open_store


@pytest.fixture(params=["local", "memory", "s3", "gcs"])
def store(request, tmp_path):
    """A fresh store: a local folder, memory, a bucket on moto's HTTP server (boto3 over 127.0.0.1),
    or a bucket on fake-gcs-server (google-cloud-storage over 127.0.0.1)."""
    if request.param == "local":
        return open_store(f"file://{tmp_path}/store")
    if request.param == "memory":
        return open_store(f"memory://query-{uuid.uuid4().hex}")
    if request.param == "gcs":
        server = request.getfixturevalue("fake_gcs")
        return open_store(f"gs://{server.new_bucket()}/pfx")
    server = request.getfixturevalue("moto_server")
    return open_store(f"s3://{server.new_bucket('query')}/pfx", endpoint_url=server.endpoint_url, region_name="us-east-1")


@pytest.fixture
def local_store(tmp_path):
    return open_store(f"file://{tmp_path}/store")
