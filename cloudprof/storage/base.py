"""The ObjectStore protocol every backend implements, and the rules keys obey.

Semantics every backend shares (tests/storage/test_contract.py holds them true):

- keys are relative to the store's URL, '/'-separated, never absolute, never
  with empty, '.' or '..' segments, NUL or other control characters;
- `put` replaces unless asked otherwise: `if_absent=True` creates only,
  `if_match=etag` replaces only the version with that etag; a lost race is
  `PreconditionFailed`;
- `list(prefix)` is lazy, paginated and sorted by key; it yields size, etag and
  time but not user metadata (S3 listings do not carry it; `head` does);
- `prefixes(prefix)` is lazy and sorted too: the distinct "folders" one level
  below `prefix`, each `prefix` + the rest of some key up to and including its
  next '/' (S3's `Delimiter="/"` CommonPrefixes); a folder exists while a key
  is under it, so the aggregator can walk service=/date=/hour= without listing
  every object;
- `delete` of a missing key is not an error (S3's semantics, and what a retried
  delete needs); `move` of a missing key is `NotFound`.
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from typing import Iterator, Mapping, Protocol, runtime_checkable

from cloudprof.errors import StorageError

__all__ = ["ObjectInfo", "ObjectStore", "check_key", "check_metadata", "check_prefix", "storable_metadata"]

# S3 caps user metadata at 2 KiB in total; GCS is more generous. Hold everyone to S3.
MAX_METADATA_BYTES = 2048


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a store knows about one object. `etag` is an etag or a GCS generation."""

    key: str
    size: int
    etag: str
    updated: _dt.datetime
    metadata: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class ObjectStore(Protocol):
    """Object storage as cloudprof needs it; see the module docstring for the rules."""

    @property
    def url(self) -> str: ...

    def put(
        self,
        key: str,
        data: bytes,
        *,
        if_absent: bool = False,
        if_match: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> ObjectInfo: ...

    def get(self, key: str) -> bytes: ...

    def head(self, key: str) -> ObjectInfo: ...

    def list(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[ObjectInfo]: ...

    def prefixes(self, prefix: str = "", *, page_size: int | None = None) -> Iterator[str]: ...

    def delete(self, key: str) -> None: ...

    def move(self, src: str, dst: str) -> ObjectInfo: ...


def _bad(what: str, value: str, why: str) -> StorageError:
    return StorageError(f"invalid object {what} {value!r}: {why}")


def check_prefix(prefix: str) -> str:
    """A list prefix: like a key, but may be empty and may end with '/'."""
    if not isinstance(prefix, str):
        raise _bad("prefix", repr(prefix), "must be a string")
    if prefix == "":
        return prefix
    check_key(prefix.rstrip("/") or "x", what="prefix", shown=prefix)
    if prefix.startswith("/") or "//" in prefix:
        raise _bad("prefix", prefix, "must be relative, without empty segments")
    return prefix


def check_key(key: str, *, what: str = "key", shown: str | None = None) -> str:
    shown = key if shown is None else shown
    if not isinstance(key, str) or not key:
        raise _bad(what, str(shown), "must be a non-empty string")
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in key):
        raise _bad(what, shown, "contains a control character")
    if "\\" in key:
        raise _bad(what, shown, "contains a backslash")
    if len(key.encode("utf-8", "surrogatepass")) > 1024:
        raise _bad(what, shown, "is longer than 1024 bytes")
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        raise _bad(what, shown, "is not valid unicode (lone surrogate)") from None
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise _bad(what, shown, "has an empty, '.' or '..' segment (keys are relative paths)")
    return key


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """User metadata: lowercase ASCII names, printable ASCII values (what S3 and GCS both keep intact)."""
    if not metadata:
        return {}
    out: dict[str, str] = {}
    for name, value in metadata.items():
        if not isinstance(name, str) or not name or not all(c.isascii() and (c.isalnum() or c in "-_") for c in name):
            raise StorageError(f"invalid metadata name {name!r}: use letters, digits, '-' and '_'")
        if not isinstance(value, str) or not all(0x20 <= ord(c) < 0x7F for c in value):
            raise StorageError(f"invalid metadata value for {name!r}: printable ASCII only, got {value!r}")
        out[name.lower()] = value
    if sum(len(k) + len(v) for k, v in out.items()) > MAX_METADATA_BYTES:
        raise StorageError(f"metadata is larger than {MAX_METADATA_BYTES} bytes (S3's limit)")
    return out


def storable_metadata(metadata: Mapping[str, str] | None) -> dict[str, str] | None:
    """`metadata` made acceptable to `check_metadata` rather than refused: names reduced to
    [a-z0-9_-], non-ASCII escaped (`\\xe9`), control characters as `?`, the total cut to the limit.
    For writers that must not lose an object over its labels (the agent's uploader)."""
    if not metadata:
        return None
    out: dict[str, str] = {}
    used = 0
    for name, value in metadata.items():
        clean = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in str(name).lower()) or "_"
        text = str(value).encode("ascii", "backslashreplace").decode("ascii")
        text = "".join(c if 0x20 <= ord(c) < 0x7F else "?" for c in text)
        if used + len(clean) + len(text) > MAX_METADATA_BYTES:
            break
        used += len(clean) + len(text)
        out[clean] = text
    return out


def utc_from_timestamp(seconds: float) -> _dt.datetime:
    return _dt.datetime.fromtimestamp(seconds, tz=_dt.timezone.utc)


def utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)
