"""Google Cloud Storage as an object store, through google-cloud-storage.

Conditional writes are generation preconditions (`if_generation_match=0` to
create, `=generation` to replace), and an object's etag here is its generation.
The endpoint follows the client's own `STORAGE_EMULATOR_HOST` (anonymous
credentials against an emulator). The client is built on first use, so missing
credentials surface as AccessDenied from an operation the agent can log and
survive, not as a crash at start-up.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator, Mapping

from cloudprof.errors import AccessDenied, ConfigError, NotFound, PreconditionFailed, StorageError, StorageUnavailable
from cloudprof.storage.base import ObjectInfo, check_key, check_metadata, check_prefix, utc_now

__all__ = ["GCSStore"]

INSTALL_HINT = "gs:// storage needs google-cloud-storage: pip install 'cloudprof[gcs]'"

PERMISSIONS = {
    "put": "storage.objects.create (and storage.objects.delete to overwrite)",
    "get": "storage.objects.get",
    "head": "storage.objects.get",
    "list": "storage.objects.list",
    "delete": "storage.objects.delete",
    "move": "storage.objects.get, storage.objects.create and storage.objects.delete",
}


def _sdk():
    try:
        import google.api_core.exceptions as api_exceptions
        import google.auth.exceptions as auth_exceptions
        import requests.exceptions as http_exceptions
        from google.cloud import storage
        from google.cloud.storage import retry as storage_retry
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return storage, api_exceptions, auth_exceptions, http_exceptions, storage_retry


class GCSStore:
    """`gs://bucket/prefix`: keys live under `prefix/` in `bucket`."""

    DEFAULT_PAGE_SIZE = 1000

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        client: Any = None,
        project: str | None = None,
        page_size: int | None = None,
        timeout: float | tuple[float, float] = (5.0, 30.0),
        retry_deadline: float = 30.0,
    ) -> None:
        self._storage, self._api, self._auth, self._http, storage_retry = _sdk()
        self.bucket_name = bucket
        prefix = prefix.strip("/")
        if prefix:
            try:
                check_prefix(prefix)
            except StorageError as exc:
                raise ConfigError(f"storage URL gs://{bucket}/{prefix}: {exc}") from None
        self.prefix = prefix + "/" if prefix else ""
        self.page_size = page_size or self.DEFAULT_PAGE_SIZE
        self._timeout = timeout
        # The library's own idea of "transient" (429, 5xx, dropped connections, also mid-download),
        # with a deadline so that a dead endpoint cannot hold a flush for the default two minutes.
        api = self._api
        self._transient = getattr(storage_retry, "_should_retry", None) or (
            lambda exc: isinstance(exc, (api.TooManyRequests, api.ServerError, self._http.ConnectionError))
        )
        self._retry = storage_retry.DEFAULT_RETRY.with_timeout(retry_deadline).with_delay(
            initial=0.2, maximum=5.0, multiplier=2.0
        )
        self._client = client
        self._project = project
        self._client_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"GCSStore({self.url!r})"

    @property
    def url(self) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}".rstrip("/")

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    client = self._storage.Client(project=self._project)
                    # google-cloud-storage 3.x looks up each bucket's project and location for its tracing
                    # spans in a thread of its own (a bucket GET, needing storage.buckets.get). Our uploads
                    # run inside the user's app: they start no threads and make no requests but their own.
                    if getattr(client, "_bucket_metadata_cache", None) is not None:
                        client._bucket_metadata_cache = None
                    self._client = client
        return self._client

    def _bucket(self):
        return self.client.bucket(self.bucket_name)

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _where(self, key: str) -> str:
        return f"gs://{self.bucket_name}/{self.prefix}{key}"

    @contextlib.contextmanager
    def _errors(self, op: str, key: str, *, conditional: bool = False):
        api, auth, http = self._api, self._auth, self._http
        where = self._where(key)
        try:
            yield
        except StorageError:
            raise
        except (api.PreconditionFailed, api.Conflict) as exc:
            raise PreconditionFailed(f"{where}: {op} precondition failed ({exc.message})") from exc
        except api.NotFound as exc:
            if conditional:
                raise PreconditionFailed(f"{where}: {op} if-match failed: the object does not exist") from exc
            raise NotFound(f"{where}: no such object ({op}: {exc.message})") from exc
        except (api.Forbidden, api.Unauthorized) as exc:
            raise AccessDenied(
                f"{where}: access denied for {op} ({exc.message}); the service account needs {PERMISSIONS[op]} "
                f"on bucket {self.bucket_name}"
            ) from exc
        except auth.DefaultCredentialsError as exc:
            raise AccessDenied(
                f"{where}: {op} failed: no Google credentials found (set GOOGLE_APPLICATION_CREDENTIALS or run "
                f"on a service account); it needs {PERMISSIONS[op]}"
            ) from exc
        except auth.RefreshError as exc:
            raise AccessDenied(f"{where}: {op} failed: Google credentials were refused ({exc})") from exc
        except (api.TooManyRequests, api.ServerError, api.RetryError, auth.TransportError,
                http.ConnectionError, http.Timeout, TimeoutError, ConnectionError) as exc:
            raise StorageUnavailable(f"{where}: {op} failed, GCS unavailable ({exc})") from exc
        except Exception as exc:
            if self._transient(exc):
                raise StorageUnavailable(f"{where}: {op} failed, GCS unavailable ({exc})") from exc
            if isinstance(exc, (api.GoogleAPIError, http.RequestException)) or type(exc).__module__.startswith(
                ("google.", "requests", "urllib3")
            ):
                raise StorageError(f"{where}: {op} failed ({exc})") from exc
            raise

    def _info(self, key: str, blob: Any, *, with_metadata: bool = True) -> ObjectInfo:
        metadata = dict(blob.metadata or {}) if with_metadata else {}
        return ObjectInfo(key, int(blob.size or 0), str(blob.generation), blob.updated or utc_now(), metadata)

    # -- the protocol ------------------------------------------------------

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        full = self._full(key)
        meta = check_metadata(metadata)
        data = bytes(data)
        generation: int | None = None
        if if_absent:
            generation = 0
        if if_match is not None:
            if not str(if_match).isdigit():
                raise PreconditionFailed(f"{self._where(key)}: put if-match {if_match!r} failed: not a GCS generation")
            if if_absent:  # both: nothing can satisfy "absent" and "has this generation"
                raise PreconditionFailed(f"{self._where(key)}: put with if_absent and if_match cannot both hold")
            generation = int(if_match)
        with self._errors("put", key, conditional=if_match is not None):
            blob = self._bucket().blob(full)
            blob.metadata = meta or None
            blob.upload_from_string(
                data, content_type="application/octet-stream", if_generation_match=generation,
                timeout=self._timeout, retry=self._retry,
            )
        return ObjectInfo(key, len(data), str(blob.generation), blob.updated or utc_now(), meta)

    def get(self, key: str) -> bytes:
        full = self._full(key)
        with self._errors("get", key):
            return self._bucket().blob(full).download_as_bytes(timeout=self._timeout, retry=self._retry)

    def head(self, key: str) -> ObjectInfo:
        full = self._full(key)
        with self._errors("head", key):
            blob = self._bucket().get_blob(full, timeout=self._timeout, retry=self._retry)
        if blob is None:
            raise NotFound(f"{self._where(key)}: no such object (head)")
        return self._info(key, blob)

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._pages(prefix, page_size or self.page_size)

    def _list_pages(self, prefix: str, page_size: int, **extra: str) -> Iterator[tuple[Any, list]]:
        """(page, its blobs) under `prefix`; each fetch's errors mapped as a listing's."""
        with self._errors("list", prefix):
            blobs = self.client.list_blobs(
                self.bucket_name, prefix=self.prefix + prefix, page_size=page_size,
                timeout=self._timeout, retry=self._retry, **extra,
            )
            pages = iter(blobs.pages)
        while True:
            with self._errors("list", prefix):
                page = next(pages, None)
                items = list(page) if page is not None else None
            if page is None:
                return
            yield page, items

    def _pages(self, prefix: str, page_size: int) -> Iterator[ObjectInfo]:
        cut = len(self.prefix)
        for _, blobs in self._list_pages(prefix, page_size):
            for blob in blobs:
                yield self._info(blob.name[cut:], blob, with_metadata=False)

    def prefixes(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]:
        check_prefix(prefix)
        return self._folder_pages(prefix, page_size or self.page_size)

    def _folder_pages(self, prefix: str, page_size: int) -> Iterator[str]:
        # Each page carries its own `prefixes` (the iterator's set only accumulates them, unordered),
        # filled in as the page is fetched. A folder may come back on more than one page: yield it once.
        cut = len(self.prefix)
        seen: set[str] = set()
        for page, _ in self._list_pages(prefix, page_size, delimiter="/"):
            for full in sorted(page.prefixes):
                if full not in seen:
                    seen.add(full)
                    yield full[cut:]

    def delete(self, key: str) -> None:
        full = self._full(key)
        with contextlib.suppress(NotFound), self._errors("delete", key):
            self._bucket().blob(full).delete(timeout=self._timeout, retry=self._retry)

    def move(self, src: str, dst: str) -> ObjectInfo:
        source, target = self._full(src), self._full(dst)
        with self._errors("move", src):
            bucket = self._bucket()
            blob = bucket.get_blob(source, timeout=self._timeout, retry=self._retry)
            if blob is None:
                raise NotFound(f"{self._where(src)}: no such object (move to {dst})")
            copied = bucket.copy_blob(
                blob, bucket, target, if_source_generation_match=blob.generation,
                timeout=self._timeout, retry=self._retry,
            )
            blob.delete(if_generation_match=blob.generation, timeout=self._timeout, retry=self._retry)
        return self._info(dst, copied)
