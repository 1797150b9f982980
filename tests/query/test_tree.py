"""Call trees and function tables: recursion, inlining, addresses, filters, and third-party profiles."""

from __future__ import annotations

import re

import pytest

import cloudprof.pprof as pprof
from cloudprof.errors import ConfigError
from cloudprof.pprof import Profile, ProfileBuilder, decode, sample_totals
from cloudprof.query import TreeBuilder, compile_search, diff_tree, movers, tree_of

THIRD_PARTY = ["go-cpu-sample-pprof.pb.gz", "go-cpu-labels-parca.pb.gz", "python-cpu-sdk-pyroscope.pb.gz",
               "python-cpu-pyspy-pyroscope.pb", "cpp-cpu-unsymbolized-pprof.pb.gz", "java-cpu-asyncprofiler-pyroscope.pb.gz",
               "go-heap-flameshow.pb.gz", "nodejs-wall-pyroscope.pb.gz"]


def build(*stacks, labels=()):
    """Stacks as ("a;b;c", count), root first."""
    b = ProfileBuilder()
    for text, n in stacks:
        frames = [(name, f"{name}.py", 1, 1) for name in reversed(text.split(";"))]
        b.add_frames(frames, [n, n * 10, n * 20], labels)
    return b.build()


def stats_of(tree, sample_type="samples"):
    return {s.name: (s.self, s.total) for s in tree.function_stats(sample_type)}


def test_recursion_counts_once_in_total():
    tree = tree_of([build(("main;f;f;f", 2), ("main;f;g", 3), ("main", 1))])
    assert stats_of(tree) == {"main": (1, 6), "f": (2, 5), "g": (3, 3)}
    assert tree.collapsed("samples") == "main 1\nmain;f;f;f 2\nmain;f;g 3\n"


def test_inlined_lines_expand_root_first_and_addresses_get_names():
    p = Profile()
    p.string_table.extend([b"", b"samples", b"count", b"outer", b"inlined", b"x.py", b"libc.so"])
    p.sample_type.add(type=1, unit=2)
    p.function.add(id=1, name=3, filename=5)
    p.function.add(id=2, name=4, filename=5)
    p.mapping.add(id=1, memory_start=0x1000, memory_limit=0x2000, filename=6)
    loc = p.location.add(id=1)
    loc.line.add(function_id=2, line=7)  # pprof: line[0] is the innermost (inlined) frame
    loc.line.add(function_id=1, line=3)
    p.location.add(id=2, mapping_id=1, address=0x1234)
    p.sample.add(location_id=[2, 1], value=[5])
    tree = tree_of([p])
    assert tree.collapsed() == "outer;inlined;libc.so+0x1234 5\n"


def test_label_filters_and_unknown_labels_match_nothing():
    p = build(("main;a", 1), labels=(("thread_name", "MainThread"),))
    q = build(("main;b", 2), labels=(("thread_name", "worker"),))
    tree = tree_of([p, q], labels={"thread_name": "worker"})
    assert stats_of(tree) == {"main": (0, 2), "b": (2, 2)}
    builder = TreeBuilder(["samples/count", "cpu/nanoseconds", "wall/nanoseconds"])
    assert builder.add(p, labels={"version": "9"}) == 0


def test_label_filter_finds_labels_whose_strings_repeat_in_the_table():
    """pprof allows a string twice in the table; a label using either copy matches."""
    p = build(("main;a", 1), labels=(("thread_name", "worker"),))
    p.string_table.extend([b"thread_name", b"worker"])  # later copies: a last-index lookup misses the label
    tree = tree_of([p], labels={"thread_name": "worker"})
    assert stats_of(tree) == {"main": (0, 1), "a": (1, 1)}


def test_tree_forms_agree():
    tree = tree_of([build(("main;a;b", 2), ("main;c", 5))])
    compact = tree.to_compact()
    assert len(compact["f"]) == len(compact["c"]) == len(compact["v"][0]) == len(tree) == 5
    nested = tree.to_nested()
    assert nested["root"]["total"]["cpu/nanoseconds"] == 70
    assert [c["name"] for c in nested["root"]["children"][0]["children"]] == ["a", "c"]  # sorted by name
    assert tree.match_share(compile_search("B")) == pytest.approx(2 / 7)  # case-insensitive substring
    assert tree.match_share(compile_search("^[bc]$", regex=True)) == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="bad search pattern"):
        compile_search("(", regex=True)
    with pytest.raises(ConfigError, match="no sample type 'alloc'"):
        tree.function_stats("alloc")


def test_movers_normalise_each_side():
    base = build(("main;a", 50), ("main;b", 50))
    target = build(("main;a", 100), ("main;b", 100), ("main;new", 200))  # twice the load, plus a new function
    moves = {m.name: m for m in movers(diff_tree(base, target), "samples")}
    assert moves["new"].base_total_pct == 0 and moves["new"].delta_total_pp == pytest.approx(50)
    assert moves["a"].delta_total_pp == pytest.approx(-25)
    assert moves["main"].delta_total_pp == 0


@pytest.mark.parametrize("name", THIRD_PARTY)
def test_third_party_profiles_fold_to_their_totals(testdata, name):
    profile = decode((testdata / "pprof" / name).read_bytes())
    tree = tree_of([profile])
    assert {t: tree.grand_total(i) for i, t in enumerate(tree.types)} == sample_totals(profile)
    for line in tree.collapsed(tree.types[-1]).splitlines()[:50]:
        assert re.fullmatch(r".+ \d+", line)


@pytest.mark.parametrize("name", THIRD_PARTY[:4])
def test_function_table_matches_pprof_top(testdata, name):
    if not hasattr(pprof, "top"):
        pytest.skip("cloudprof.pprof.top has not landed yet")
    profile = decode((testdata / "pprof" / name).read_bytes())
    tree = tree_of([profile])
    ours = {(s.name, s.filename): (s.self, s.total) for s in tree.function_stats()}
    theirs = {(s.name, s.filename): (s.self, s.total) for s in pprof.top(profile) if s.self or s.total}
    assert ours == theirs
