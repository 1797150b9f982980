"""An in-process object store for tests and demos: `memory://name`.

Stores with the same name share their objects within a process, so an agent
and an aggregator opened from the same URL see each other's writes.
"""

from __future__ import annotations

import bisect
import itertools
import threading
from typing import Iterator, Mapping

from cloudprof.errors import NotFound, PreconditionFailed
from cloudprof.storage.base import ObjectInfo, check_key, check_metadata, check_prefix, utc_now

__all__ = ["MemoryStore"]

_BUCKETS: dict[str, "_Bucket"] = {}
_BUCKETS_LOCK = threading.Lock()
_GENERATION = itertools.count(1)  # etags are generations: unique per write, like GCS


class _Bucket:
    __slots__ = ("lock", "objects", "keys")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self.keys: list[str] = []  # sorted, for lazy paginated listing


class MemoryStore:
    """Objects in a dict shared by name; thread-safe, never touches disk."""

    DEFAULT_PAGE_SIZE = 1000

    def __init__(self, name: str = "default", *, page_size: int | None = None) -> None:
        self.name = name
        self.page_size = page_size or self.DEFAULT_PAGE_SIZE
        with _BUCKETS_LOCK:
            self._bucket = _BUCKETS.setdefault(name, _Bucket())

    @classmethod
    def drop(cls, name: str) -> None:
        """Forget every object of the named store (tests use fresh names instead)."""
        with _BUCKETS_LOCK:
            _BUCKETS.pop(name, None)

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"

    @property
    def url(self) -> str:
        return f"memory://{self.name}"

    def _where(self, key: str) -> str:
        return f"{self.url}/{key}"

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo:
        check_key(key)
        meta = check_metadata(metadata)
        data = bytes(data)
        bucket = self._bucket
        with bucket.lock:
            current = bucket.objects.get(key)
            if if_absent and current is not None:
                raise PreconditionFailed(f"{self._where(key)}: put if-absent failed: the object exists")
            if if_match is not None and (current is None or current[1].etag != if_match):
                found = "it does not exist" if current is None else f"its etag is {current[1].etag}"
                raise PreconditionFailed(f"{self._where(key)}: put if-match {if_match} failed: {found}")
            info = ObjectInfo(key, len(data), str(next(_GENERATION)), utc_now(), meta)
            if current is None:
                bisect.insort(bucket.keys, key)
            bucket.objects[key] = (data, info)
        return _copy(info)

    def get(self, key: str) -> bytes:
        check_key(key)
        found = self._bucket.objects.get(key)
        if found is None:
            raise NotFound(f"{self._where(key)}: no such object (get)")
        return found[0]

    def head(self, key: str) -> ObjectInfo:
        check_key(key)
        found = self._bucket.objects.get(key)
        if found is None:
            raise NotFound(f"{self._where(key)}: no such object (head)")
        return _copy(found[1])

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]:
        check_prefix(prefix)
        return self._pages(prefix, page_size or self.page_size)

    def _pages(self, prefix: str, page_size: int) -> Iterator[ObjectInfo]:
        # Page like a cloud listing: each page starts after the last key seen, so
        # writes between pages show up (or not) exactly as they would on S3.
        bucket = self._bucket
        after: str | None = None
        while True:
            with bucket.lock:
                keys = bucket.keys
                start = bisect.bisect_right(keys, after) if after is not None else bisect.bisect_left(keys, prefix)
                page = []
                for key in itertools.islice(keys, start, start + page_size):
                    if not key.startswith(prefix):
                        break
                    page.append(bucket.objects[key][1])
            for info in page:
                yield ObjectInfo(info.key, info.size, info.etag, info.updated, {})
            if len(page) < page_size:
                return
            after = page[-1].key

    def prefixes(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]:
        check_prefix(prefix)
        return self._folder_pages(prefix, page_size or self.page_size)

    def _folder_pages(self, prefix: str, page_size: int) -> Iterator[str]:
        # Like S3, a page holds up to `page_size` entries, loose keys and folders alike, and the
        # next page starts after the last one: a folder's keys all sort below its stem + '0'
        # ('/' + 1), and the key after `k` is at least `k` + NUL (keys hold no control characters).
        bucket = self._bucket
        cut = len(prefix)
        low: str | None = prefix
        while True:
            page: list[str] = []
            with bucket.lock:
                keys = bucket.keys
                start = bisect.bisect_left(keys, low)
                for _ in range(page_size):
                    if start >= len(keys) or not keys[start].startswith(prefix):
                        low = None
                        break
                    key = keys[start]
                    slash = key.find("/", cut)
                    if slash < 0:
                        low = key + "\x00"
                    else:
                        page.append(key[: slash + 1])
                        low = key[:slash] + "0"
                    start = bisect.bisect_left(keys, low, start)
            yield from page
            if low is None:
                return

    def delete(self, key: str) -> None:
        check_key(key)
        bucket = self._bucket
        with bucket.lock:
            if bucket.objects.pop(key, None) is not None:
                del bucket.keys[bisect.bisect_left(bucket.keys, key)]

    def move(self, src: str, dst: str) -> ObjectInfo:
        check_key(src)
        check_key(dst)
        bucket = self._bucket
        with bucket.lock:
            found = bucket.objects.pop(src, None)
            if found is None:
                raise NotFound(f"{self._where(src)}: no such object (move to {dst})")
            del bucket.keys[bisect.bisect_left(bucket.keys, src)]
            data, info = found
            moved = ObjectInfo(dst, info.size, info.etag, info.updated, info.metadata)
            if dst not in bucket.objects:
                bisect.insort(bucket.keys, dst)
            bucket.objects[dst] = (data, moved)
        return _copy(moved)


def _copy(info: ObjectInfo) -> ObjectInfo:
    return ObjectInfo(info.key, info.size, info.etag, info.updated, dict(info.metadata))
