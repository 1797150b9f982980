"""Bytes <-> Profile: gzip or plain protobuf, with limits, and clear errors for what is not pprof.

Decompression is streamed against a size cap so a gzip bomb costs at most
`max_size` bytes of memory, never its full expansion.
"""

from __future__ import annotations

import gzip
import zlib

from google.protobuf import message

from cloudprof.errors import ProfileError
from cloudprof.pprof.profile_pb2 import Profile
from cloudprof.pprof.validate import validate
from cloudprof.pprof.views import Header, view

__all__ = ["DEFAULT_MAX_SIZE", "GZIP_MAGIC", "decode", "encode", "gunzip", "parse", "unwrap"]

DEFAULT_MAX_SIZE = 256 << 20
GZIP_MAGIC = b"\x1f\x8b"
_CHUNK = 1 << 20
_FIRST_WINDOW = 64

# Headers of the pre-protobuf Go text formats that google/pprof still reads as "legacy".
_LEGACY_TEXT = (
    (b"heap profile:", "heap profile"),
    (b"heap_v2/", "heap profile"),
    (b"--- heapz", "heap profile"),
    (b"--- growthz", "heap growth profile"),
    (b"--- contention", "contention profile"),
    (b"--- mutex", "mutex profile"),
    (b"--- threadz", "thread profile"),
    (b"goroutine profile:", "goroutine profile"),
    (b"threadcreate profile:", "threadcreate profile"),
)


def gunzip(data: bytes, max_size: int = DEFAULT_MAX_SIZE, *, ignore_trailing: bool = False) -> bytes:
    """Decompress every gzip member of `data`, refusing output larger than max_size.

    Bytes after the last member other than zero padding are an error, unless
    `ignore_trailing` (what gzip(1) does, and the aggregator with raw uploads).

    Input goes to zlib in windows that grow while a member lasts: zlib copies
    whatever follows a member's end into `unused_data`, so handing it all the
    remaining input would make many small (say empty) members cost quadratic time,
    which the output cap does not bound.
    """
    out = bytearray()
    view = memoryview(data)
    pos = 0
    while True:
        d = zlib.decompressobj(wbits=31)
        window = _FIRST_WINDOW
        try:
            while not d.eof:
                if pos < len(view):
                    tail = view[pos:pos + window]
                    pos += len(tail)
                    window = min(window * 2, _CHUNK)
                    while tail and len(out) <= max_size and not d.eof:
                        out += d.decompress(tail, min(max_size - len(out) + 1, _CHUNK))
                        tail = d.unconsumed_tail
                else:
                    out += d.flush()  # input is exhausted; zlib may still hold buffered output
                    if not d.eof:
                        raise ProfileError("truncated gzip data: the stream ends before its last block")
                if len(out) > max_size:
                    raise ProfileError(f"profile too large: more than {max_size} bytes after gunzip (gzip bomb?)")
        except zlib.error as exc:
            raise ProfileError(f"corrupt gzip data: {exc}") from None
        pos -= len(d.unused_data)
        rest = view[pos:]
        if rest[:2] == GZIP_MAGIC:
            continue
        if ignore_trailing or not rest.tobytes().strip(b"\0"):
            return bytes(out)
        raise ProfileError("corrupt gzip data: trailing bytes after the last gzip member")


def _legacy_reason(data: bytes) -> str | None:
    head = data[:64]
    for magic, what in _LEGACY_TEXT:
        if head.startswith(magic):
            return (f"legacy Go {what} in text format ({magic.decode()!r} header), not protobuf pprof; "
                    "convert it with `go tool pprof -proto FILE > FILE.pb.gz`")
    # Legacy binary CPU profiles start with the header words 0, 3, 0 (32- or 64-bit, either byte order).
    for size in (8, 4):
        if len(head) >= 3 * size:
            words = [head[i * size:(i + 1) * size] for i in range(3)]
            three = (3).to_bytes(size, "little"), (3).to_bytes(size, "big")
            if words[0] == bytes(size) and words[1] in three and words[2] == bytes(size):
                return ("legacy Go CPU profile in binary format (header words 0, 3, 0), not protobuf pprof; "
                        "convert it with `go tool pprof -proto FILE > FILE.pb.gz`")
    return None


def unwrap(data: bytes, max_size: int = DEFAULT_MAX_SIZE) -> bytes:
    """The protobuf bytes inside `data`: gunzipped when gzip, size-capped, legacy Go formats refused."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, not {type(data).__name__}")
    if not data:
        raise ProfileError("empty input: 0 bytes is not a profile")
    if bytes(data[:2]) == GZIP_MAGIC:
        data = gunzip(data, max_size)
        if not data:
            raise ProfileError("empty input: gzip stream holds 0 bytes")
    elif len(data) > max_size:
        raise ProfileError(f"profile too large: {len(data)} bytes (limit {max_size})")
    legacy = _legacy_reason(bytes(data[:64]))
    if legacy:
        raise ProfileError(legacy)
    return data


def parse(raw: bytes) -> Profile:
    """Protobuf bytes -> Profile, without validation; ProfileError when the wire format is not a Profile."""
    profile = Profile()
    try:
        profile.ParseFromString(raw)
    except message.DecodeError as exc:
        raise ProfileError(f"not a pprof profile: the protobuf wire format is corrupt ({exc})") from None
    except (ValueError, RuntimeError, OverflowError) as exc:
        raise ProfileError(f"not a pprof profile: {exc}") from None
    if profile.time_nanos:
        header = view(Header, raw)
        if any(header.time_nanos[:-1]):
            # go tool pprof's rule: a second time_nanos after a non-zero one means two profiles back to back.
            raise ProfileError("two profiles concatenated in one message (time_nanos appears twice)")
    return profile


def decode(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE, check: bool = True) -> Profile:
    """Parse pprof bytes (gzip by magic bytes, else plain) and validate them.

    Raises ProfileError saying why: empty, truncated, too large, a legacy Go
    format, not protobuf, or not a valid profile (see `validate`).
    `check=False` skips validation for callers that validate another way.
    """
    raw = unwrap(data, max_size)
    profile = parse(raw)
    if check:
        validate(profile, raw)
    return profile


def encode(profile: Profile, *, compress: bool = True) -> bytes:
    """Serialize, gzip-compressed by default (what every pprof reader expects)."""
    data = profile.SerializeToString()
    if compress:
        return gzip.compress(data, compresslevel=6, mtime=0)
    return data
