"""Each kind of bad upload is quarantined with its reason while the good ones merge."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import timedelta

import pytest

from cloudprof.aggregator import MergeOptions, Partition, Reason, merge_partition, read_manifest
from cloudprof.pprof import Profile, ProfileBuilder, encode
from tests.aggregator import rawgen
from tests.aggregator.checks import assert_exact

PART = Partition("checkout", rawgen.HOUR, "cpu")
CLOSED = MergeOptions(now=rawgen.HOUR + timedelta(hours=3))
START = int(rawgen.HOUR.timestamp() * 1000)


def _valid(seed=1, **kw) -> bytes:
    return rawgen.agent_profile("checkout", START + 5000, seed=seed, **kw)[0]


def _gzip_bomb() -> bytes:
    """~100 MiB of zeros in ~100 KiB of gzip."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    chunk = bytes(1 << 20)
    return b"".join([*(packer.compress(chunk) for _ in range(100)), packer.flush()])


def _huge_string_table() -> bytes:
    profile = Profile()
    profile.string_table.extend([b""] + [b"s%d" % i for i in range(1_000_000)])
    return encode(profile)


def _wrong_types() -> bytes:
    return _valid(sample_types=(("alloc_objects", "count"), ("alloc_space", "bytes")), period_type=("space", "bytes"))


def _other_hour() -> bytes:
    return rawgen.agent_profile("checkout", START + 3_600_000 + 5000, seed=3)[0]


def _dangling() -> bytes:
    builder = ProfileBuilder()
    builder.add_frames([("f", "f.py", 1, 1)], [1, 10, 10])
    profile = builder.build()
    profile.sample[0].location_id.append(999)
    return encode(profile)


def _name(seq: int, start_ms: int = START + 1000) -> str:
    return rawgen.raw_key("checkout", start_ms, host="bad", pid=1, seq=seq).rsplit("/", 1)[1]


# (id, file name under the partition's raw folder, bytes, expected reason)
CASES = [
    ("zero-bytes", _name(1), lambda: b"", Reason.EMPTY),
    ("truncated", _name(2), lambda: _valid()[: len(_valid()) // 2], Reason.BAD_GZIP),
    ("not-gzip", _name(3), lambda: gzip.decompress(_valid()), Reason.NOT_GZIP),
    ("text", _name(4), lambda: b"heap profile: 1: 2 [3: 4] @ heap/1048576\n", Reason.NOT_GZIP),
    ("gzip-bomb", _name(5), _gzip_bomb, Reason.TOO_LARGE),
    ("gzip-garbage", _name(6), lambda: b"\x1f\x8b" + bytes(range(256)) * 4, Reason.BAD_GZIP),
    ("wrong-sample-types", _name(7), _wrong_types, Reason.WRONG_SAMPLE_TYPES),
    ("million-strings", _name(8), _huge_string_table, Reason.TOO_MANY_STRINGS),
    ("dangling-location", _name(9), _dangling, Reason.INVALID_PROFILE),
    ("other-service", _name(10), lambda: rawgen.agent_profile("payments", START + 5000, seed=4)[0], Reason.WRONG_PARTITION),
    ("time-in-other-hour", _name(11), _other_hour, Reason.WRONG_PARTITION),
    ("key-in-wrong-partition", _name(12, START + 3_600_000 + 1000), _other_hour, Reason.WRONG_PARTITION),
    ("badly-named", "notes from ops.txt", _valid, Reason.BAD_KEY),
]


@pytest.mark.parametrize("case_id,name,make,reason", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_quarantined_with_reason(memory_store, case_id, name, make, reason):
    good = rawgen.put_many(memory_store, 4)
    key = PART.raw_prefix + name
    original = make()
    memory_store.put(key, original)
    result = merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (result.merged, result.quarantined) == (4, 1)
    assert_exact(memory_store, PART, good, bad_keys=[key])
    entry = {e.key: e for e in read_manifest(memory_store, PART.manifest_key)[0].kind("cpu").inputs}[key]
    assert entry.reason == reason.value, entry.detail
    doc = json.loads(memory_store.get(entry.quarantine_key + ".reason.json"))
    assert doc["reason"] == reason.value and doc["key"] == key and doc["detail"]
    assert memory_store.get(entry.quarantine_key) == original  # moved, byte for byte, not deleted


def test_all_bad_inputs_at_once_next_to_good_ones(local_store):
    good = rawgen.put_many(local_store, 10)
    bad = []
    for case_id, name, make, _reason in CASES:
        local_store.put(PART.raw_prefix + name, make())
        bad.append(PART.raw_prefix + name)
    result = merge_partition(local_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (result.merged, result.quarantined) == (10, len(CASES))
    assert_exact(local_store, PART, good, bad_keys=bad)


def test_third_party_profiles_that_are_not_agent_cpu_are_quarantined(memory_store, testdata):
    good = rawgen.put_many(memory_store, 2)
    expected = {}
    for i, (file, reason) in enumerate([
        ("go-cpu-sample-pprof.pb.gz", Reason.WRONG_SAMPLE_TYPES),  # pprof, but samples/count + cpu only
        ("invalid-wrong-message-pyroscope.pb.gz", Reason.INVALID_PROFILE),
        ("invalid-legacy-go-cpu-pprof.bin", Reason.NOT_GZIP),
        ("invalid-utf8-string-pyroscope.pb.gz", None),
    ]):
        key = PART.raw_prefix + _name(100 + i)
        memory_store.put(key, (testdata / "pprof" / file).read_bytes())
        expected[key] = reason
    result = merge_partition(memory_store, "checkout", rawgen.HOUR, "cpu", options=CLOSED)
    assert (result.merged, result.quarantined) == (2, 4)
    assert_exact(memory_store, PART, good, bad_keys=list(expected))
    entries = {e.key: e for e in read_manifest(memory_store, PART.manifest_key)[0].kind("cpu").inputs}
    for key, reason in expected.items():
        if reason is not None:
            assert entries[key].reason == reason.value, (key, entries[key].detail)


def test_many_empty_gzip_members_cost_work_linear_in_the_upload(monkeypatch):
    """Empty members add no output, so max_decoded_bytes does not bound them; zlib must not be handed the whole
    remaining upload per member (32 MB of them took minutes: a partition stuck behind one upload)."""
    from cloudprof.aggregator.inputs import load_input

    real = zlib.decompressobj
    seen = [0]

    class Counted:
        def __init__(self, *args, **kwargs):
            self._inner = real(*args, **kwargs)

        def decompress(self, data, max_length=0):
            seen[0] += len(data)
            return self._inner.decompress(data, max_length)

        def __getattr__(self, name):
            value = getattr(self._inner, name)
            if name in ("unused_data", "unconsumed_tail"):
                seen[0] += len(value)
            return value

    monkeypatch.setattr(zlib, "decompressobj", Counted)
    work = []
    for members in (5_000, 20_000):
        seen[0] = 0
        loaded = load_input(_valid() + gzip.compress(b"", mtime=0) * members, PART)
        assert loaded.totals
        work.append(seen[0])
    assert work[1] < 5 * work[0], f"4x the members cost {work[1] / work[0]:.1f}x the work: not linear"


def test_bytes_after_the_last_gzip_member_are_ignored_as_gzip_does():
    from cloudprof.aggregator.inputs import load_input

    assert load_input(_valid() + b"not another member", PART).totals == load_input(_valid(), PART).totals


def test_a_version_label_the_producer_set_wins_even_with_a_repeated_version_string():
    """pprof allows a string twice in the table; the producer's own label must still be found (not doubled)."""
    from cloudprof.aggregator.inputs import load_input
    from cloudprof.pprof import decode

    profile = decode(_valid())
    table = profile.string_table
    table.extend([b"version", b"9.9"])
    key, value = len(table) - 2, len(table) - 1
    table.append(b"version")  # the repeat: a lookup by last index would miss the producer's label
    for sample in profile.sample:
        sample.label.add(key=key, str=value)
    loaded = load_input(encode(profile), PART)
    for sample in loaded.profile.sample:
        versions = [lab for lab in sample.label if loaded.profile.string_table[lab.key] == b"version"]
        assert [loaded.profile.string_table[lab.str] for lab in versions] == [b"9.9"]
