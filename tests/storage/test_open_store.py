"""open_store picks the backend from the URL, and says clearly what it cannot open."""

from __future__ import annotations

import pytest

from cloudprof.errors import ConfigError
from cloudprof.storage import LocalStore, MemoryStore, ObjectStore, open_store
from tests.servers import unique_bucket


@pytest.mark.parametrize(
    "url", ["", "   ", "ftp://host/x", "s3://", "gs:///prefix", "file://", None, "s3://b/a//b", "gs://b/../x"]
)
def test_bad_urls_are_config_errors(url):
    with pytest.raises(ConfigError):
        open_store(url)


def test_local_and_memory(tmp_path):
    assert isinstance(open_store(f"file://{tmp_path}"), LocalStore)
    assert isinstance(open_store(str(tmp_path)), LocalStore)
    name = unique_bucket("mem")
    first, second = open_store(f"memory://{name}"), open_store(f"memory://{name}")
    assert isinstance(first, MemoryStore) and isinstance(first, ObjectStore)
    first.put("k", b"shared")
    assert second.get("k") == b"shared"  # same name, same objects: agent and aggregator can meet
    assert list(open_store(f"memory://{unique_bucket('mem')}").list()) == []
    MemoryStore.drop(name)
    assert list(open_store(f"memory://{name}").list()) == []


def test_cloud_schemes_are_case_insensitive_and_lazy(aws_mock):
    store = open_store("S3://bucket-name/a/b")
    assert store.url == "s3://bucket-name/a/b"
