"""Bad bytes never crash, hang or exhaust memory: each one is a ProfileError that says what is wrong."""

from __future__ import annotations

import gzip
import random
import tracemalloc
import zlib

import pytest

from cloudprof.errors import ProfileError
from cloudprof.pprof import Merger, Profile, decode, encode, merge, strings, validate
from tests.pprof import gen


def good() -> Profile:
    return gen.python_profile(7, samples=40)


@pytest.mark.parametrize("fraction", [0.05, 0.25, 0.5, 0.75, 0.95, 0.999])
def test_truncated_gzip(fraction):
    data = encode(good())
    with pytest.raises(ProfileError, match="gzip"):
        decode(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_truncated_protobuf(fraction):
    data = encode(good(), compress=False)
    with pytest.raises(ProfileError):
        decode(data[: int(len(data) * fraction)])


@pytest.mark.parametrize("data", [b"", gzip.compress(b"")], ids=["zero-bytes", "gzip-of-nothing"])
def test_empty_input(data):
    with pytest.raises(ProfileError, match="empty"):
        decode(data)


@pytest.mark.parametrize("seed", range(20))
def test_random_bytes(seed):
    rng = random.Random(seed)
    data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 4000)))
    for candidate in (data, gzip.compress(data), b"\x1f\x8b" + data):
        try:
            validate(decode(candidate))
        except ProfileError:
            pass


def test_bit_flips_in_a_real_profile():
    data = bytearray(encode(good(), compress=False))
    rng = random.Random(1)
    for _ in range(200):
        flipped = bytearray(data)
        for _ in range(3):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        try:
            merge([decode(bytes(flipped))])
        except ProfileError:
            pass


def _bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"\0" * (1 << 20)
    return b"".join([*(c.compress(block) for _ in range(size >> 20)), c.flush()])


@pytest.mark.slow
def test_gzip_bomb_stops_at_the_cap_without_inflating_it_all():
    bomb = _bomb(1 << 30)  # 1 GiB of zeros in about 1 MB
    assert len(bomb) < 2 << 20
    tracemalloc.start()
    try:
        with pytest.raises(ProfileError, match="too large"):
            decode(bomb, max_size=32 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 80 << 20, f"peak {peak >> 20} MiB: decompression was not capped"


def test_gzip_bomb_with_default_cap():
    with pytest.raises(ProfileError, match="too large"):
        decode(_bomb(300 << 20))


def test_plain_input_over_the_cap():
    with pytest.raises(ProfileError, match="too large"):
        decode(encode(good(), compress=False), max_size=100)


def test_one_million_entry_string_table():
    raw = b"\x32\x00" * 1_000_000  # field 6 (string_table), a million empty strings
    p = decode(raw)
    assert len(p.string_table) == 1_000_000
    assert strings(p)[999_999] == ""
    merge([p])
    big = good()
    big.string_table.extend([b"x%d" % i for i in range(1_000_000)])
    again = decode(encode(big))
    assert len(again.string_table) == len(big.string_table)


def _broken(mutate) -> bytes:
    p = good()
    mutate(p)
    return encode(p)


BROKEN = {
    "sample location out of range": (lambda p: p.sample[0].location_id.append(10**6), "location id 1000000"),
    "sample location 0": (lambda p: p.sample[0].location_id.append(0), "location id 0"),
    "line function out of range": (lambda p: p.location[0].line[0].__setattr__("function_id", 999),
                                   "function id 999"),
    "line function 0": (lambda p: p.location[0].line[0].__setattr__("function_id", 0), "function id 0"),
    "function name index out of range": (lambda p: p.function[0].__setattr__("name", 10**6), "string index"),
    "negative string index": (lambda p: p.function[0].__setattr__("filename", -1), "string index"),
    "sample type index out of range": (lambda p: p.sample_type[0].__setattr__("unit", 10**6), "string index"),
    "label index out of range": (lambda p: p.sample[0].label[0].__setattr__("str", 10**6), "label"),
    "comment index out of range": (lambda p: p.comment.append(10**6), "comment"),
    "duplicate function id": (lambda p: p.function.add().CopyFrom(p.function[0]), "multiple functions"),
    "duplicate location id": (lambda p: p.location.add().CopyFrom(p.location[0]), "multiple locations"),
    "function id 0": (lambda p: p.function.add(id=0, name=1), "function with reserved id 0"),
    "location id 0": (lambda p: p.location.add(id=0), "location with reserved id 0"),
    "mapping id 0": (lambda p: p.mapping.add(id=0), "mapping with reserved id 0"),
    "too few values": (lambda p: p.sample[3].value.pop(), "2 values for 3 sample types"),
    "too many values": (lambda p: p.sample[3].value.append(1), "4 values for 3 sample types"),
    "no sample types": (lambda p: p.ClearField("sample_type"), "no sample_type"),
    "string_table[0] not empty": (lambda p: p.string_table.__setitem__(0, b"x"), "string_table"),
    "no string table": (lambda p: p.ClearField("string_table"), "string_table"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_dangling_and_out_of_range_ids(case):
    mutate, match = BROKEN[case]
    data = _broken(mutate)
    with pytest.raises(ProfileError, match=match):
        decode(data)
    merger = Merger()
    merger.add(good())
    before = merger.sample_totals()
    with pytest.raises(ProfileError):
        merger.add(data)
    assert merger.sample_totals() == before, "a bad input must not change the merge"


def test_dangling_mapping_id_reads_as_no_mapping_like_go():
    p = good()
    p.location[0].mapping_id = 42
    again = decode(encode(p))
    assert merge([again]).location  # accepted, as go tool pprof accepts it


def test_concatenated_profiles_are_refused():
    a = encode(good(), compress=False)
    with pytest.raises(ProfileError, match="concatenated"):
        decode(a + a)


@pytest.mark.parametrize("data,match", [
    (b"heap profile: 13: 1595680 [47130736: 2584596557304] @ heap/1048576\n", "legacy Go heap"),
    (gzip.compress(b"heap profile: 1: 2 [3: 4] @ heap/1048576\n"), "legacy Go heap"),
    (b"--- contention:\ncycles/second=1\n", "legacy Go contention"),
    (b"goroutine profile: total 4\n", "legacy Go goroutine"),
    (b"\0" * 8 + (3).to_bytes(8, "little") + b"\0" * 8 + (10000).to_bytes(8, "little"), "legacy Go CPU"),
    (b"\0" * 4 + (3).to_bytes(4, "little") + b"\0" * 4 + (10000).to_bytes(4, "little"), "legacy Go CPU"),
    (b"\x12\xff\xff\xff\xff\x0f", "not a pprof profile"),
    (b"hello, I am not a profile\n", "not a pprof profile"),
    (b"{\"json\": true}", "pprof"),
])
def test_foreign_formats_are_named(data, match):
    with pytest.raises(ProfileError, match=match):
        decode(data)


def test_decode_refuses_non_bytes():
    with pytest.raises(TypeError):
        decode("text")  # type: ignore[arg-type]


def test_gzip_members_and_trailing_bytes():
    raw = encode(good(), compress=False)
    half = len(raw) // 2
    two_members = gzip.compress(raw[:half]) + gzip.compress(raw[half:])
    assert decode(two_members) == decode(raw), "concatenated gzip members read as one stream, as in Go"
    assert decode(gzip.compress(raw) + b"\0" * 16) == decode(raw), "zero padding after the stream is ignored"
    with pytest.raises(ProfileError, match="trailing bytes"):
        decode(gzip.compress(raw) + b"garbage")


class _CountingZlib:
    """zlib as codec sees it, counting the input bytes handed to decompressors and the tails they copy back."""

    error = zlib.error

    def __init__(self) -> None:
        self.bytes_seen = 0

    def decompressobj(self, *args, **kwargs):
        inner = zlib.decompressobj(*args, **kwargs)
        counter = self

        class Counted:
            def decompress(self, data, max_length=0):
                counter.bytes_seen += len(data)
                return inner.decompress(data, max_length)

            def flush(self, *a):
                return inner.flush(*a)

            def __getattr__(self, name):
                value = getattr(inner, name)
                if name in ("unused_data", "unconsumed_tail"):
                    counter.bytes_seen += len(value)
                return value

        return Counted()


def test_many_small_gzip_members_cost_work_linear_in_the_input(monkeypatch):
    """A stream of empty members adds no output, so the size cap does not bound it; the work must stay linear
    (handing each member the whole remaining input made 800 KB of empty members take seconds, 32 MB hours)."""
    from cloudprof.pprof import codec

    raw = encode(good(), compress=False)
    seen = []
    for members in (5_000, 20_000):
        counting = _CountingZlib()
        monkeypatch.setattr(codec, "zlib", counting)
        data = gzip.compress(raw, mtime=0) + gzip.compress(b"", mtime=0) * members
        assert decode(data) == decode(raw)
        seen.append(counting.bytes_seen)
    assert seen[1] < 5 * seen[0], f"4x the members cost {seen[1] / seen[0]:.1f}x the work: not linear"
