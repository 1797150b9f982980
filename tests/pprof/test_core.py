"""Builder, codec, validate and merge on profiles we generate ourselves (no corpus needed)."""

from __future__ import annotations

import gzip

import pytest

from cloudprof.errors import IncompatibleProfiles, ProfileError
from cloudprof.pprof import Merger, Profile, ProfileBuilder, decode, encode, merge, sample_totals, strings, validate


def small_profile(scale: int = 1, *, time_nanos: int = 1_000, duration: int = 10, label: str | None = None) -> Profile:
    b = ProfileBuilder()
    b.time_nanos = time_nanos
    b.duration_nanos = duration
    labels = (("thread_name", label),) if label else ()
    leaf = ("leaf", "app.py", 10, 9)
    mid = ("handler", "app.py", 20, 18)
    root = ("<module>", "main.py", 1, 1)
    b.add_frames([leaf, mid, root], [1 * scale, 10 * scale, 20 * scale], labels)
    b.add_frames([mid, root], [2 * scale, 20 * scale, 40 * scale], labels)
    b.add_frames([leaf, mid, root], [1 * scale, 10 * scale, 20 * scale], labels)
    b.comment("service=checkout")
    return b.build()


def test_builder_interns_symbols_and_adds_identical_stacks():
    b = ProfileBuilder()
    f = b.function("work", "w.py", 3)
    assert b.function("work", "w.py", 3) == f
    assert b.function("work", "other.py", 3) != f
    loc = b.location(f, 5)
    assert b.location(f, 5) == loc and b.location(f, 6) != loc
    assert b.string("x") == b.string("x")
    b.add((loc,), [1, 2, 3])
    b.add((loc,), [1, 2, 3])
    b.add((loc,), [1, 2, 3], (("thread_name", "MainThread"),))
    p = b.build()
    validate(p)
    assert len(p.sample) == 2
    assert list(p.sample[0].value) == [2, 4, 6]
    table = strings(p)
    assert table[0] == ""
    assert len(table) == len(set(table)), "strings are interned once"
    assert sample_totals(p) == {"samples/count": 3, "cpu/nanoseconds": 6, "wall/nanoseconds": 9}


def test_builder_rejects_wrong_value_count_and_unknown_ids():
    b = ProfileBuilder()
    with pytest.raises(ProfileError):
        b.add((), [1])
    with pytest.raises(ProfileError):
        b.add((7,), [1, 2, 3])
    with pytest.raises(ProfileError):
        b.location(99, 1)


def test_labels_are_order_insensitive_and_numeric_labels_work():
    b = ProfileBuilder(sample_types=[("samples", "count")])
    loc = b.location(b.function("f"), 1)
    b.add((loc,), [1], (("a", "1"), ("b", "2")))
    b.add((loc,), [1], (("b", "2"), ("a", "1")))
    b.add((loc,), [1], (("bytes", 512),))
    p = b.build()
    assert [list(s.value) for s in p.sample] == [[2], [1]]
    assert p.sample[1].label[0].num == 512
    assert decode(encode(p)) == p


@pytest.mark.parametrize("compress", [True, False])
def test_encode_decode_round_trip(compress):
    p = small_profile()
    data = encode(p, compress=compress)
    assert (data[:2] == b"\x1f\x8b") is compress
    assert decode(data) == p


def test_merge_adds_identical_stacks_and_combines_headers():
    a = small_profile(1, time_nanos=5_000, duration=10, label="main")
    b = small_profile(2, time_nanos=3_000, duration=7, label="main")
    m = merge([a, b])
    validate(m)
    assert len(m.sample) == 2
    assert sample_totals(m) == {"samples/count": 12, "cpu/nanoseconds": 120, "wall/nanoseconds": 240}
    assert m.time_nanos == 3_000 and m.duration_nanos == 17
    assert strings(m)[m.comment[0]] == "service=checkout" and len(m.comment) == 1


def test_merge_keeps_different_labels_apart():
    m = merge([small_profile(label="a"), small_profile(label="b")])
    assert len(m.sample) == 4


def test_merger_streams_bytes_and_reports_totals():
    merger = Merger()
    for i in range(1, 4):
        merger.add(encode(small_profile(i)))
    assert merger.inputs == 3
    assert merger.sample_totals() == {"samples/count": 24, "cpu/nanoseconds": 240, "wall/nanoseconds": 480}
    assert sample_totals(merger.result()) == merger.sample_totals()


def test_merge_refuses_incompatible_sample_types():
    other = ProfileBuilder(sample_types=[("alloc_space", "bytes")], period_type=("space", "bytes"))
    other.add_frames([("f", "", 0, 0)], [1])
    with pytest.raises(IncompatibleProfiles, match="different sample or period types"):
        merge([small_profile(), other.build()])


def test_bad_input_leaves_merger_unchanged():
    merger = Merger()
    merger.add(small_profile())
    before = merger.sample_totals()
    bad = small_profile()
    bad.sample[0].location_id.append(999)
    with pytest.raises(ProfileError):
        merger.add(bad)
    assert merger.sample_totals() == before and merger.inputs == 1


def test_rejected_input_leaves_no_strings_or_symbols_in_the_result():
    """A rejected input must not leak into the output: not its strings (which may be private), nor its symbols."""
    merger = Merger()
    merger.add(small_profile())
    bad = ProfileBuilder()
    bad.add_frames([("secret_function", "secret.py", 1, 1)], [1, 10, 10])
    bad.comment("secret=comment")
    bad = bad.build()
    bad.sample[0].location_id.append(999)
    with pytest.raises(ProfileError):
        merger.add(bad)
    bad_header = small_profile()
    bad_header.string_table.append(b"secret_type")
    bad_header.sample_type[0].type = len(bad_header.string_table) - 1
    with pytest.raises(IncompatibleProfiles):
        merger.add(bad_header)
    merger.add(small_profile(2))
    assert not [s for s in merger.result().string_table if b"secret" in s]
    assert merger.result() == merge([small_profile(), small_profile(2)])


@pytest.mark.parametrize("data,match", [
    (b"", "empty"),
    (gzip.compress(b""), "empty"),
    (encode(small_profile())[:-12], "truncated"),
    (b"\x1f\x8b\x08\x00garbage-garbage", "gzip"),
    (b"heap profile: 1: 2 [3: 4] @ heap/1048576\n", "legacy Go heap"),
    (b"\0" * 8 + (3).to_bytes(8, "little") + b"\0" * 8 + b"rest", "legacy Go CPU"),
    (b"\xff\xff\xff\xff\xff\xff\xff", "not a pprof profile"),
])
def test_decode_errors_say_what_is_wrong(data, match):
    with pytest.raises(ProfileError, match=match):
        decode(data)


def test_decode_caps_decompressed_size():
    bomb = gzip.compress(b"\0" * (8 << 20))
    with pytest.raises(ProfileError, match="too large"):
        decode(bomb, max_size=1 << 20)


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_merge_files_in_parallel_equals_one_process(tmp_path, workers):
    from cloudprof.pprof import merge_files

    paths = []
    for seed in range(7):
        path = tmp_path / f"p{seed}.pb.gz"
        path.write_bytes(encode(small_profile(seed + 1, time_nanos=1_000 + seed, label=f"t{seed % 2}")))
        paths.append(path)
    expected = merge(decode(p.read_bytes()) for p in paths)
    assert merge_files(paths, workers=workers) == expected


def test_merge_files_names_the_bad_file(tmp_path):
    from cloudprof.pprof import merge_files

    good = tmp_path / "good.pb.gz"
    good.write_bytes(encode(small_profile()))
    bad = tmp_path / "bad.pb.gz"
    bad.write_bytes(b"\x1f\x8b\x08\x00nonsense")
    with pytest.raises(ProfileError, match="bad.pb.gz: truncated gzip"):
        merge_files([good, good, bad, good], workers=2)
    with pytest.raises(ProfileError, match="missing.pb.gz"):
        merge_files([good, tmp_path / "missing.pb.gz"])
