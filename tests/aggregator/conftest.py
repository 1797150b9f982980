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
