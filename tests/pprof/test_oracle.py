"""go tool pprof as the oracle: it reads what we write, and our merge and top agree with its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudprof.pprof import (Profile, decode, encode, filter_samples, from_collapsed, function_totals, merge,
                             sample_totals, sample_type_names, top)
from tests.pprof import gen, gotool

SERIES = ["go-heap-series1-parca.pb.gz", "go-heap-series2-parca.pb.gz", "go-heap-series3-parca.pb.gz"]
GO_CPU = ["go-cpu-flameshow.pb.gz", "go-cpu-sample-pprof.pb.gz", "go-cpu-labels-parca.pb.gz",
          "go-cpu-nomappings-speedscope.pb.gz", "go-cpu-stripped-parca.pb.gz"]


def _write(path: Path, profile: Profile) -> Path:
    path.write_bytes(encode(profile))
    return path


def _located_totals(profile: Profile) -> dict[str, int]:
    """sample_totals over samples with at least one frame: go tool pprof drops frameless samples on
    reading (py-spy's ` 4` line); we keep them, because those samples were really taken."""
    located = Profile()
    located.CopyFrom(profile)
    kept = [s for s in profile.sample if s.location_id]
    del located.sample[:]
    located.sample.extend(kept)
    return sample_totals(located)


def _per_function(profile: Profile) -> dict[str, dict]:
    """For every sample type: {(name, file): (self, total)} with zero rows dropped."""
    out = {}
    for name in sample_type_names(profile):
        stats, _ = function_totals(profile, name)
        out[name] = {key: (s, t) for key, (s, t, _) in stats.items() if s or t}
    return out


def _assert_merge_matches_go(go_bin: str, paths: list[Path], tmp_path: Path) -> Profile:
    ours = merge(decode(p.read_bytes()) for p in paths)
    theirs = decode(gotool.merged(go_bin, paths, tmp_path / "go-merged.pb.gz").read_bytes())
    assert _located_totals(ours) == sample_totals(theirs)
    assert _per_function(ours) == _per_function(theirs)
    assert ours.duration_nanos == theirs.duration_nanos
    assert ours.period == theirs.period
    ours_path = _write(tmp_path / "ours-merged.pb.gz", ours)
    assert gotool.raw_totals(go_bin, ours_path) == _located_totals(ours)
    return ours


def test_merge_of_heap_series_matches_go(testdata, go_bin, tmp_path):
    paths = [testdata / "pprof" / name for name in SERIES]
    ours = _assert_merge_matches_go(go_bin, paths, tmp_path)
    firsts = [decode(p.read_bytes()).time_nanos for p in paths]
    assert ours.time_nanos == min(firsts)


def test_merge_of_go_cpu_profiles_matches_go(testdata, go_bin, tmp_path):
    _assert_merge_matches_go(go_bin, [testdata / "pprof" / name for name in GO_CPU], tmp_path)


@pytest.mark.slow
def test_merge_with_the_large_cpu_profile_matches_go(testdata, go_bin, tmp_path):
    names = ["go-cpu-large-pprof.pb.gz", "go-cpu-sample-pprof.pb.gz", "go-cpu-large-pprof.pb.gz"]
    _assert_merge_matches_go(go_bin, [testdata / "pprof" / name for name in names], tmp_path)


def test_merge_of_collapsed_corpus_matches_go(testdata, go_bin, tmp_path):
    paths = [_write(tmp_path / f"{p.stem}.pb.gz", from_collapsed(p.read_bytes()))
             for p in sorted((testdata / "collapsed").iterdir())]
    _assert_merge_matches_go(go_bin, paths, tmp_path)


def test_merge_of_generated_profiles_matches_go(go_bin, tmp_path):
    """Stands on its own: no corpus needed."""
    paths = [_write(tmp_path / f"p{seed}.pb.gz", gen.python_profile(seed)) for seed in range(6)]
    ours = _assert_merge_matches_go(go_bin, paths, tmp_path)
    assert ours.duration_nanos == 6 * 10_000_000_000
    # A tree of merges gives the same answer as one flat merge.
    halves = [merge(decode(p.read_bytes()) for p in paths[:3]), merge(decode(p.read_bytes()) for p in paths[3:])]
    assert _per_function(merge(halves)) == _per_function(ours)


def test_go_reads_every_kind_of_profile_we_write(go_bin, tmp_path):
    written = {
        "builder": gen.python_profile(1),
        "builder-no-labels": gen.python_profile(2, labels=False),
        "merged": merge([gen.python_profile(3), gen.python_profile(4)]),
        "filtered": filter_samples(gen.python_profile(5), labels={"thread_name": "MainThread"}),
        "collapsed": from_collapsed("a;b;c 3\na;b 2\n 1\nmain (app.py:3);work (app.py:10) 7\n"),
        "empty": gen.python_profile(6, samples=0),
    }
    for name, profile in written.items():
        path = _write(tmp_path / f"{name}.pb.gz", profile)
        assert gotool.raw_totals(go_bin, path) == _located_totals(profile), name
        plain = tmp_path / f"{name}.pb"
        plain.write_bytes(encode(profile, compress=False))
        assert gotool.reads(go_bin, plain)[0], name


@pytest.mark.parametrize("source", ["generated", "go-cpu-sample-pprof.pb.gz", "go-cpu-labels-parca.pb.gz"])
def test_top_matches_go_top(go_bin, tmp_path, source, request):
    if source == "generated":
        profile = merge([gen.python_profile(seed) for seed in range(3)])
    else:
        profile = decode((request.getfixturevalue("testdata") / "pprof" / source).read_bytes())
    path = _write(tmp_path / "p.pb.gz", profile)
    for sample_type in sample_type_names(profile):
        type_, unit = sample_type.split("/")
        theirs = gotool.top(go_bin, path, type_, {"nanoseconds": "ns", "count": "", "bytes": "B"}.get(unit, ""))
        ours: dict[str, tuple[float, float]] = {}
        for stat in top(profile, sample_type):
            if stat.total:
                old = ours.get(stat.name, (0, 0))
                ours[stat.name] = (old[0] + stat.self, max(old[1], stat.total))
        assert ours == theirs, sample_type


def _native_profile(start: int, build_id: str, counts: list[int]) -> Profile:
    """An unsymbolized profile: one mapping, address-only locations, like a native profiler writes."""
    p = Profile()
    p.string_table.extend([b"", b"samples", b"count", b"/usr/bin/server", build_id.encode()])
    p.sample_type.add(type=1, unit=2)
    p.period_type.type, p.period_type.unit, p.period = 1, 2, 1
    p.mapping.add(id=1, memory_start=start, memory_limit=start + 0x100000, filename=3, build_id=4)
    for i in range(3):
        p.location.add(id=i + 1, mapping_id=1, address=start + 0x100 * (i + 1))
    for i, count in enumerate(counts):
        p.sample.add(location_id=[i % 3 + 1, 3], value=[count])
    return p


def test_merge_across_address_space_randomisation_matches_go(go_bin, tmp_path):
    """The same binary loaded at two addresses is one mapping; its locations line up by offset."""
    paths = [_write(tmp_path / "a.pb.gz", _native_profile(0x400000, "abc", [1, 2, 3])),
             _write(tmp_path / "b.pb.gz", _native_profile(0x7f0000, "abc", [10, 20, 30])),
             _write(tmp_path / "c.pb.gz", _native_profile(0x400000, "other-build", [100, 200, 300]))]
    ours = _assert_merge_matches_go(go_bin, paths, tmp_path)
    assert len(ours.mapping) == 2 and len(ours.location) == 6
    assert sorted(loc.address for loc in ours.location)[:3] == [0x400100, 0x400100, 0x400200]


def _readable(testdata: Path) -> list[Path]:
    from cloudprof.errors import ProfileError

    out = []
    for path in sorted((testdata / "pprof").iterdir()):
        try:
            decode(path.read_bytes())
        except ProfileError:
            continue
        out.append(path)
    return out


@pytest.mark.slow
def test_every_corpus_file_merged_alone_matches_go(testdata, go_bin, tmp_path):
    """Real-world shapes (inlining, mappings, address-only frames, labels, odd units) through both merges."""
    for path in _readable(testdata):
        if "large" in path.name:
            continue  # covered by test_merge_with_the_large_cpu_profile_matches_go
        _assert_merge_matches_go(go_bin, [path], tmp_path)


def test_corpus_files_of_the_same_kind_merge_like_go(testdata, go_bin, tmp_path):
    groups: dict[tuple, list[Path]] = {}
    for path in _readable(testdata):
        if "large" in path.name:
            continue
        p = decode(path.read_bytes())
        table = p.string_table
        key = (tuple(sample_type_names(p)), table[p.period_type.type], table[p.period_type.unit])
        groups.setdefault(key, []).append(path)
    merged_groups = 0
    for paths in groups.values():
        if len(paths) > 1:
            _assert_merge_matches_go(go_bin, paths, tmp_path)
            merged_groups += 1
    assert merged_groups >= 3, groups
