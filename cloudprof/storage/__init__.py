"""Object storage behind one interface: local folder, S3, GCS, memory.

`open_store(url)` picks the backend from the URL; boto3 and google-cloud-storage
are imported only when an `s3://` or `gs://` URL is opened.
"""

from __future__ import annotations

from typing import Any

from cloudprof.errors import AccessDenied, ConfigError, NotFound, PreconditionFailed, StorageError, StorageUnavailable
from cloudprof.storage.base import ObjectInfo, ObjectStore
from cloudprof.storage.local import LocalStore
from cloudprof.storage.memory import MemoryStore

__all__ = [
    "AccessDenied",
    "LocalStore",
    "MemoryStore",
    "NotFound",
    "ObjectInfo",
    "ObjectStore",
    "PreconditionFailed",
    "StorageError",
    "StorageUnavailable",
    "open_store",
]

_SCHEMES = ("file", "gs", "memory", "s3")


def open_store(url: str, **client_kwargs: Any) -> ObjectStore:
    """The store a URL names: `file://path`, `s3://bucket/prefix`, `gs://bucket/prefix`, `memory://name`.

    A bare path is a local folder. Keyword arguments go to the backend: for S3
    `session=`, `client=`, `endpoint_url=`, `region_name=`, `sse=`, `sse_kms_key_id=`;
    for GCS `client=`, `project=`; for every backend `page_size=` where listings page.
    """
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"storage URL must be a non-empty string, got {url!r}")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        return LocalStore(url, **client_kwargs)
    scheme = scheme.lower()
    if scheme == "file":
        if not rest:
            raise ConfigError(f"storage URL {url!r} names no folder (try file://.cloudprof)")
        return LocalStore(rest, **client_kwargs)
    if scheme == "memory":
        return MemoryStore(rest.strip("/") or "default", **client_kwargs)
    if scheme in ("s3", "gs"):
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"storage URL {url!r} names no bucket ({scheme}://bucket/prefix)")
        if scheme == "s3":
            from cloudprof.storage.s3 import S3Store

            return S3Store(bucket, prefix, **client_kwargs)
        from cloudprof.storage.gcs import GCSStore

        return GCSStore(bucket, prefix, **client_kwargs)
    raise ConfigError(f"storage URL {url!r}: unknown scheme {scheme!r}; use one of {', '.join(s + '://' for s in _SCHEMES)}")
