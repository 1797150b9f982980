"""Every third-party profile in ../shared/testdata: we read what go tool pprof reads and reject what it rejects.

The one deliberate difference: the pre-protobuf legacy Go formats, which
go tool pprof still parses, are refused with an error that names them.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from cloudprof.errors import ProfileError
from cloudprof.pprof import (decode, encode, from_collapsed, merge, sample_totals, strings, to_collapsed, top,
                             validate)
from tests.pprof import gotool

PPROF_FILES = [
    "cpp-cpu-unsymbolized-pprof.pb.gz", "dotnet-multi-type-pyroscope.pb", "go-block-contention-pyroscope.pb.gz",
    "go-cpu-flameshow.pb.gz", "go-cpu-labels-parca.pb.gz", "go-cpu-large-pprof.pb.gz",
    "go-cpu-nomappings-speedscope.pb.gz", "go-cpu-sample-pprof.pb.gz", "go-cpu-stripped-parca.pb.gz",
    "go-goroutine-flameshow.pb.gz", "go-heap-delta-parca.pb.gz", "go-heap-flameshow.pb.gz",
    "go-heap-nomappings-pprof.pb.gz", "go-heap-series1-parca.pb.gz", "go-heap-series2-parca.pb.gz",
    "go-heap-series3-parca.pb.gz", "go-mutex-contention-pyroscope.pb.gz", "go-wall-fgprof-parca.pb.gz",
    "invalid-legacy-go-cpu-pprof.bin", "invalid-legacy-go-heap-text-pprof.txt", "invalid-utf8-string-pyroscope.pb.gz",
    "invalid-wrong-message-pyroscope.pb.gz", "java-alloc-jfr-pyroscope.pb.gz", "java-cpu-asyncprofiler-pyroscope.pb.gz",
    "java-mutex-delay-jfr-pyroscope.pb.gz", "java-wall-jfr-pyroscope.pb.gz", "native-cpu-ebpf-kernel-libc-parca.pb.gz",
    "native-cpu-ebpf-threadlabels-parca.pb.gz", "nodejs-wall-pyroscope.pb.gz",
    "python-cpu-ebpf-no-addr-no-line-pyroscope.pb.gz", "python-cpu-mapping0-pyroscope.pb.gz",
    "python-cpu-pyspy-pyroscope.pb", "python-cpu-sdk-pyroscope.pb.gz", "tiny-two-stacks-parca.pb.gz",
]
# What go tool pprof says about the files it refuses, and the reason we give.
REJECTED = {
    "dotnet-multi-type-pyroscope.pb": "function with reserved id 0",  # go: "found function with reserved ID=0"
    "invalid-wrong-message-pyroscope.pb.gz": 'string_table\\[0\\] must be ""',  # go: "unrecognized profile format"
    "invalid-legacy-go-cpu-pprof.bin": "legacy Go CPU profile in binary format",  # go reads legacy; we refuse
    "invalid-legacy-go-heap-text-pprof.txt": "legacy Go heap profile in text format",
}
LEGACY = {"invalid-legacy-go-cpu-pprof.bin", "invalid-legacy-go-heap-text-pprof.txt"}

# README's table: stack lines, total of their counts, deepest stack. The README counts lines matching
# `^(.+) (\d+)$`, which leaves out py-spy's empty-stack line ` 4`; we keep it as a frameless sample.
COLLAPSED = {
    "c-perf-funcab-flamegraph.txt": (169, 4),
    "nodejs-perf-jit-flamegraph.txt": (2, 19),
    "dd-perf-kernel-flamegraph.txt": (101010100, 8),
    "java-perf-faults-pid-flamegraph.txt": (200, 23),
    "python-pyspy-flameshow.txt": (330 + 4, 110),
    "python-austin-header-flameshow.txt": (17063, 3),
    "edge-crlf-speedscope.txt": (14, 3),
    "edge-utf16le-bom-speedscope.txt": (14, 3),
    "edge-with-invalid-lines-speedscope.txt": (14, 3),
}


def test_corpus_is_the_one_these_tests_know(testdata):
    assert sorted(p.name for p in (testdata / "pprof").iterdir()) == sorted(PPROF_FILES)
    assert sorted(p.name for p in (testdata / "collapsed").iterdir()) == sorted(COLLAPSED)


@pytest.mark.parametrize("name", [n for n in PPROF_FILES if n not in REJECTED])
def test_readable_file_decodes_validates_and_reencodes_equivalently(testdata, name, tmp_path):
    data = (testdata / "pprof" / name).read_bytes()
    profile = decode(data)
    validate(profile)
    for compress in (True, False):
        again = decode(encode(profile, compress=compress))
        assert again == profile
    assert sample_totals(again) == sample_totals(profile)
    # Our re-encoding must still be a profile our own merge, top and collapsed writer accept.
    merged = merge([profile])
    assert sample_totals(merged) == sample_totals(profile)
    if profile.sample_type:
        top(profile)
        to_collapsed(profile)


@pytest.mark.parametrize("name", sorted(REJECTED))
def test_rejected_file_raises_profile_error_saying_why(testdata, name):
    with pytest.raises(ProfileError, match=REJECTED[name]):
        decode((testdata / "pprof" / name).read_bytes())


def test_invalid_utf8_is_decoded_with_replacement(testdata):
    profile = decode((testdata / "pprof" / "invalid-utf8-string-pyroscope.pb.gz").read_bytes())
    assert any("\ufffd" in s for s in strings(profile))
    assert decode(encode(profile)) == profile  # the original bytes survive a round trip


@pytest.mark.parametrize("name", PPROF_FILES)
def test_we_accept_exactly_what_go_tool_pprof_accepts(testdata, go_bin, name):
    path = testdata / "pprof" / name
    go_ok, said = gotool.reads(go_bin, path)
    try:
        ours = decode(path.read_bytes())
    except ProfileError:
        ours = None
    if name in LEGACY:
        assert go_ok and ours is None, "legacy formats: go tool pprof reads them, we refuse them by design"
        return
    assert (ours is not None) == go_ok, f"go tool pprof {'reads' if go_ok else 'rejects'} {name}: {said[-300:]}"
    if ours is not None:
        assert sample_totals(ours) == gotool.raw_totals(go_bin, path)


@pytest.mark.parametrize("name", [n for n in PPROF_FILES if n not in REJECTED and "large" not in n])
def test_go_tool_pprof_reads_our_reencoding(testdata, go_bin, name, tmp_path):
    profile = decode((testdata / "pprof" / name).read_bytes())
    out = tmp_path / "again.pb.gz"
    out.write_bytes(encode(profile))
    assert gotool.raw_totals(go_bin, out) == sample_totals(profile)


def _stacks(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        out[stack] = out.get(stack, 0) + int(count)
    return out


@pytest.mark.parametrize("name", sorted(COLLAPSED))
def test_collapsed_file_reads_with_readme_totals_and_round_trips(testdata, name):
    total, depth = COLLAPSED[name]
    profile = from_collapsed((testdata / "collapsed" / name).read_bytes())
    validate(profile)
    assert sample_totals(profile) == {"samples/count": total}
    assert max(len(s.location_id) for s in profile.sample) == depth
    text = to_collapsed(profile)
    assert sum(_stacks(text).values()) == total
    again = from_collapsed(text)
    assert to_collapsed(again) == text
    assert sample_totals(again) == sample_totals(profile)


def test_collapsed_frames_keep_their_text(testdata):
    text = (testdata / "collapsed" / "nodejs-perf-jit-flamegraph.txt").read_text()
    ours = _stacks(to_collapsed(from_collapsed(text)))
    assert ours == _stacks(text), "frames with spaces, $, <>, & and _[j] survive unchanged"


def test_pyspy_frames_split_into_function_file_and_line(testdata):
    profile = from_collapsed((testdata / "collapsed" / "python-pyspy-flameshow.txt").read_bytes())
    table = strings(profile)
    names = {table[f.name]: table[f.filename] for f in profile.function}
    assert names["_find_and_load"] == "<frozen importlib._bootstrap>"
    assert names["main"] in {"click/core.py", "flameshow/main.py"}
    assert re.search(r"^ 4$", to_collapsed(profile), re.M), "the empty stack is kept"


def test_austin_header_becomes_comments(testdata):
    profile = from_collapsed((testdata / "collapsed" / "python-austin-header-flameshow.txt").read_bytes())
    comments = [strings(profile)[c] for c in profile.comment]
    assert "austin: 3.7.0" in comments and "interval: 100" in comments
    assert len(profile.sample) == 2, "'# interval: 100' is a header, not a stack"


@pytest.mark.parametrize("name", ["go-cpu-sample-pprof.pb.gz", "go-heap-series1-parca.pb.gz"])
def test_collapsed_from_real_profile_matches_totals(testdata, name):
    profile = decode((testdata / "pprof" / name).read_bytes())
    for i, vt in enumerate(profile.sample_type):
        sample_type = f"{strings(profile)[vt.type]}/{strings(profile)[vt.unit]}"
        text = to_collapsed(profile, sample_type)
        assert sum(_stacks(text).values()) == sample_totals(profile)[sample_type]


def test_corpus_path_is_found(testdata):
    assert isinstance(testdata, Path) and (testdata / "pprof").is_dir()
