"""top, diff, filter_samples and sample-type choice, on profiles small enough to check by hand."""

from __future__ import annotations

import pytest

from cloudprof.errors import ProfileError
from cloudprof.pprof import ProfileBuilder, diff, filter_samples, sample_totals, sample_type_index, strings, top

MAIN = ("main", "app.py", 2, 1)
HANDLE = ("handle", "app.py", 11, 10)
PARSE = ("parse", "json.py", 31, 30)
FIB = ("fib", "app.py", 21, 20)


def profile(scale: int = 1, extra: bool = False):
    b = ProfileBuilder()
    b.add_frames([PARSE, HANDLE, MAIN], [6 * scale, 60 * scale, 70 * scale], (("thread_name", "worker"),))
    b.add_frames([HANDLE, MAIN], [2 * scale, 20 * scale, 30 * scale], (("thread_name", "MainThread"),))
    b.add_frames([FIB, FIB, FIB, MAIN], [2 * scale, 20 * scale, 20 * scale],
                 (("thread_name", "MainThread"), ("endpoint", "/fib")))
    if extra:
        b.add_frames([("gc", "", 0, 0), MAIN], [10 * scale, 100 * scale, 100 * scale])
    return b.build()


def test_top_self_and_total():
    stats = {s.name: s for s in top(profile())}
    assert stats["parse"].self == 60 and stats["parse"].total == 60
    assert stats["handle"].self == 20 and stats["handle"].total == 80
    assert stats["main"].self == 0 and stats["main"].total == 100 and stats["main"].total_pct == 100.0
    assert stats["fib"].total == 20, "recursion is counted once per sample"
    assert stats["fib"].self == 20 and stats["fib"].self_pct == 20.0
    assert stats["parse"].filename == "json.py" and stats["parse"].line == 30
    assert [s.name for s in top(profile())][:3] == ["parse", "handle", "fib"], "self, then total, descending"


def test_top_by_sample_type():
    stats = {s.name: s for s in top(profile(), "samples/count")}
    assert stats["parse"].self == 6 and stats["handle"].total == 8
    assert {s.name: s.self for s in top(profile(), "wall")}["parse"] == 70


def test_diff_normalises_shares():
    same = diff(profile(1), profile(5))
    assert all(abs(d.delta_self_pct) < 1e-9 and abs(d.delta_total_pct) < 1e-9 for d in same), \
        "a longer window with the same shape is no change"
    changed = diff(profile(1), profile(2, extra=True))
    first = changed[0]
    # target cpu: parse 120 + handle 40 + fib 40 + gc 200 = 400
    assert first.name == "gc" and first.base_self_pct == 0 and first.target_self_pct == pytest.approx(50)
    assert first.delta_self_pct == pytest.approx(50) and first.target_self == 200
    parse = next(d for d in changed if d.name == "parse")
    assert parse.base_self_pct == pytest.approx(60) and parse.delta_self_pct == pytest.approx(30 - 60)


def test_filter_samples_by_label():
    p = profile()
    main = filter_samples(p, labels={"thread_name": "MainThread"})
    assert sample_totals(main)["cpu/nanoseconds"] == 40
    both = filter_samples(p, labels={"thread_name": "MainThread", "endpoint": "/fib"})
    assert sample_totals(both)["cpu/nanoseconds"] == 20
    assert sample_totals(filter_samples(p, labels={"endpoint": None}))["cpu/nanoseconds"] == 20
    assert not filter_samples(p, labels={"thread_name": "nobody"}).sample
    assert filter_samples(p) == p
    assert strings(main) == strings(p), "symbol tables are untouched"


def test_sample_type_choice():
    p = profile()
    assert sample_type_index(p) == 1, "cpu by default"
    assert sample_type_index(p, "wall") == 2 and sample_type_index(p, "wall/nanoseconds") == 2
    with pytest.raises(ProfileError, match="no sample type 'alloc_space'.*samples/count, cpu/nanoseconds"):
        sample_type_index(p, "alloc_space")
    heap = ProfileBuilder(sample_types=[("alloc_space", "bytes"), ("inuse_space", "bytes")],
                          period_type=("space", "bytes"))
    assert sample_type_index(heap.build()) == 0, "no cpu: the first"
    heap.default_sample_type = "inuse_space"
    assert sample_type_index(heap.build()) == 1, "no cpu: the profile's own default when it names one"
