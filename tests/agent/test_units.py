"""Sampling-path pieces without threads or signals: stack interning, lines, tick cadence, governor, windows (fake clock)."""

from __future__ import annotations

import datetime as dt
import sys
import threading
import time

import pytest

from cloudprof.agent.clocks import ManualClock
from cloudprof.agent.governor import Governor
from cloudprof.agent.sampler import Sampler, next_deadline
from cloudprof.agent.stacks import TRUNCATED, StackTable, Symbolizer, record, record_copy
from cloudprof.agent.window import HOUR_NS, WindowSchedule, window_end

LABELS = (("thread_name", "t"),)


class Shape:
    def method(self, depth, table, max_depth=128):
        if depth:
            return self.method(depth - 1, table, max_depth)
        record(table, LABELS, sys._getframe(), max_depth, 1, 7, 11)  # LINE-RECORD
        return sys._getframe().f_lineno


def line_of(marker):
    return next(i for i, line in enumerate(open(__file__), 1) if marker in line and "def line_of" not in line
                and "line_of(" not in line)


def test_identical_stacks_are_interned_and_add_up():
    table = StackTable()
    for _ in range(50):
        Shape().method(3, table)
    assert len(table) == 1
    (values,) = table.stacks.values()
    assert values == [50, 350, 550]


def test_frames_resolve_to_qualified_names_and_lines():
    table = StackTable()
    Shape().method(2, table)
    (key,) = table.stacks
    frames = Symbolizer().frames(key, table.codes)
    assert key[0] == LABELS
    assert [f[0] for f in frames[:4]] == ["Shape.method"] * 3 + [
        "test_frames_resolve_to_qualified_names_and_lines"]
    assert frames[0][1] == __file__
    assert frames[0][2] == line_of("# LINE-RECORD")
    assert frames[0][3] == line_of("def method(self")
    assert frames[1][2] == line_of("return self.method(depth - 1")


def test_deep_stacks_are_cut_with_a_marker():
    table = StackTable()
    Shape().method(300, table, max_depth=128)
    (key,) = table.stacks
    frames = Symbolizer().frames(key, table.codes)
    assert len(frames) == 129
    assert frames[-1][0] == TRUNCATED and frames[0][0] == "Shape.method"


@pytest.mark.skipif(sys.version_info[:2] != (3, 11), reason="the C copy is built for 3.11")
@pytest.mark.parametrize("max_depth", [3, 4])
def test_a_copy_at_a_c_call_gets_the_callee_as_leaf_within_max_depth(max_depth):
    """A copied stack whose leaf is at a call into C gets the `<native>` leaf, and stays within max_depth frames
    (the leaf counts, as in `record`)."""
    def sleeper():
        time.sleep(0.3)

    thread = threading.Thread(target=sleeper)
    thread.start()
    time.sleep(0.1)
    frame = sys._current_frames()[thread.ident]  # at the CALL of time.sleep
    code = frame.f_code
    copied = (id(code), frame.f_lasti, id(code), 2, id(code), 4)  # three frames, as a copy of depth 3 gives them
    table = StackTable()
    key = record_copy(table, ("l",), copied, {id(code): code}, frame, max_depth, 1, 10, 0)
    thread.join()
    names = [f[0] for f in Symbolizer().frames(key, table.codes)]
    assert names[0] == "<native> time.sleep", names
    name = code.co_qualname
    assert names[1:] == ([name, name, TRUNCATED] if max_depth == 3 else [name] * 3), names
    assert table.codes == {id(code): code}


def test_keys_share_one_int_per_code_id_and_offset():
    """Keys differ mostly in one frame's offset; the rest of each key is the same values, held once (the C walk
    interns them), so a window's memory is its keys, not its keys times their depth in ints."""
    from cloudprof.agent import stacks

    if stacks._stack_key is None:
        pytest.skip("the C extension is not built for this interpreter")
    table = StackTable()

    def here():
        return record(table, (), sys._getframe(), 128, 1, 1, 0)

    first, second = here(), here()  # two stacks of the same frames, at two offsets of this test
    assert first != second
    same = [i for i in range(1, len(first)) if first[i] == second[i] and first[i].__class__ is int and first[i] > 256]
    assert len(same) >= 4, (first, second)  # code ids (and offsets past the small ints' cache)
    assert all(first[i] is second[i] for i in same), same


def test_memory_grows_with_unique_stacks_not_samples():
    table = StackTable()
    for i in range(2000):
        Shape().method(i % 5, table)
    assert len(table) == 5
    assert sum(v[0] for v in table.stacks.values()) == 2000


def test_tick_cadence_keeps_time_and_resyncs():
    period = 10
    assert next_deadline(100, 103, period) == 110  # a little late: keep the grid
    assert next_deadline(100, 115, period) == 110  # one tick behind: catch up once
    assert next_deadline(100, 150, period) == 160  # far behind: resync, no burst


def test_governor_lowers_then_raises_the_rate():
    g = Governor(100, 1.0)
    second = 10**9
    # 3% of the app's CPU: cut the rate to fit under 1%
    hz = g.update(own_ns=30_000_000, process_ns=1_030_000_000, wall_ns=second)
    assert hz < 35 and g.last_share_pct == pytest.approx(3.0, rel=0.01)
    # cost follows the rate: now ~0.3%, so it climbs back, never above the target
    for _ in range(20):
        hz = g.update(own_ns=int(300_000 * hz / 10), process_ns=second, wall_ns=second)
    assert hz == 100


def test_governor_pays_back_cpu_over_its_budget():
    """The sampler's first step (start-up: new code analysed, first pulls) may go over the budget, and the governor
    then starts again from the full rate. Judged step by step it cut only to fit each step, and the first 10
    seconds were 0.28% against 0.25%; now what went over is paid back by the steps after."""
    second, budget_pct = 10**9, 0.25
    g = Governor(100, budget_pct)
    ns_per_hz = 40_000  # cost follows the rate: 100 Hz is 4 ms a second, 0.40% of the app's CPU

    def step(own):
        g.update(own_ns=own, process_ns=second + own, wall_ns=second)
        return own

    spent = [step(6_000_000)]  # start-up
    g.reset()  # as the sampler does after its first step
    for _ in range(9):
        spent.append(step(int(ns_per_hz * g.hz)))
    assert sum(spent) <= budget_pct / 100 * 10 * second, spent
    assert g.debt_ns == 0 and spent[-1] >= 0.7 * budget_pct / 100 * second, spent  # then back to its usual aim
    # a nearly idle step owes nothing: a burst after it is sampled at the full rate
    step(6_000_000)
    assert g.debt_ns > 0
    g.update(own_ns=200_000, process_ns=400_000, wall_ns=second)
    assert g.debt_ns == 0
    # capped at five steps' budgets: a long spell over budget does not hold the rate at half for as long after
    for _ in range(30):
        step(6_000_000)
    assert g.debt_ns <= 5 * budget_pct / 100 * second


def test_governor_slows_the_thread_not_the_signal_when_the_app_idles():
    g = Governor(100, 1.0)
    second = 10**9
    # an idle app (0.2 ms of CPU) and 3 ms of the agent's thread ticks: over the floor of 0.05% of a core
    g.update(own_ns=3_000_000, process_ns=3_200_000, wall_ns=second, thread_ns=3_000_000)
    assert g.tick_hz < 20 and g.hz == 100  # the signal costs nothing while idle: a burst gets the full rate
    assert g.ticks_slowed_idle  # so the first busy tick may restore them
    # even when a rare signal (set off by the agent's own CPU) cost more than the ticks in that step
    g = Governor(100, 1.0)
    g.update(own_ns=3_000_000, process_ns=3_200_000, wall_ns=second, thread_ns=1_000_000)
    assert g.tick_hz < 20 and g.hz == 100
    # a busy app whose ticks (many threads) cost too much: slowed for cost, they stay slowed when it is busy
    g = Governor(100, 1.0)
    g.update(own_ns=30_000_000, process_ns=1_030_000_000, wall_ns=second, thread_ns=29_000_000)
    assert g.tick_hz < 35 and g.hz == 100 and not g.ticks_slowed_idle
    # a busy app whose cost is the signal handler's: the signal slows, the thread never runs faster than it
    g = Governor(100, 1.0)
    g.update(own_ns=30_000_000, process_ns=1_030_000_000, wall_ns=second, thread_ns=1_000_000)
    assert g.hz < 35 and g.tick_hz == g.hz


def test_governor_leaves_an_idle_process_alone():
    g = Governor(100, 0.25)
    # the process used almost nothing; 0.2 ms/s of agent CPU is below the floor of 0.05% of a core
    assert g.update(own_ns=200_000, process_ns=400_000, wall_ns=10**9) == 100


def test_window_ends_at_interval_or_hour():
    hour = 1_800_000_000 * 10**9 // HOUR_NS * HOUR_NS
    assert window_end(hour + 10 * 10**9, 60 * 10**9) == hour + 70 * 10**9
    assert window_end(hour + HOUR_NS - 30 * 10**9, 60 * 10**9) == hour + HOUR_NS


def test_schedule_cuts_at_hour_boundaries_with_a_fake_clock():
    hour = 1_800_000_000 * 10**9 // HOUR_NS * HOUR_NS
    clock = ManualClock(now_ns=hour + HOUR_NS - 90 * 10**9)
    s = WindowSchedule(clock, 60)
    clock.advance(59)
    assert not s.due(clock.time_ns())
    clock.advance(1.002)  # the cut comes a little late
    start, end = s.cut(clock.time_ns())
    assert (start, end) == (hour + HOUR_NS - 90 * 10**9, hour + HOUR_NS - 30 * 10**9)
    clock.advance(30)
    start, end = s.cut(clock.time_ns())
    assert end == hour + HOUR_NS  # never spans the hour
    assert s.start_ns == hour + HOUR_NS and s.end_ns == hour + HOUR_NS + 60 * 10**9
    utc = dt.datetime.fromtimestamp(end / 1e9, dt.timezone.utc)
    assert (utc.minute, utc.second) == (0, 0)


def test_schedule_skips_a_long_suspension():
    clock = ManualClock()
    s = WindowSchedule(clock, 60)
    clock.advance(7200)
    start, end = s.cut(clock.time_ns())
    assert end - start <= 60 * 10**9
    assert s.start_ns == clock.time_ns()


def test_a_sample_at_function_entry_belongs_to_the_caller():
    from cloudprof.agent.stacks import where_cpu_went

    seen = {}

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code.co_name == "callee":
            seen["entry"] = where_cpu_went(frame).f_code.co_name

    def callee():
        seen["running"] = where_cpu_went(sys._getframe()).f_code.co_name

    def caller():
        callee()

    sys.setprofile(profiler)
    try:
        caller()
    finally:
        sys.setprofile(None)
    if sys.version_info >= (3, 11):
        assert seen["entry"] == "caller"  # at its RESUME the callee has not run yet
    assert seen["running"] == "callee"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="RESUME is 3.11+")
def test_function_entries_are_found_as_dis_finds_them():
    import dis
    import gc
    import types

    from cloudprof.agent.stacks import _entry_resumes

    codes = {id(f.__code__): f.__code__ for f in gc.get_objects() if isinstance(f, types.FunctionType)}
    generators = 0
    for code in codes.values():
        want = {i.offset for i in dis.get_instructions(code) if i.opname == "RESUME" and i.arg == 0}
        assert _entry_resumes(code.co_code) == want, code
        generators += any(i.opname == "RESUME" and i.arg for i in dis.get_instructions(code))
    assert len(codes) > 1000 and generators > 10  # resumes after a yield (arg > 0) are not entries


def test_the_c_walk_makes_the_keys_the_python_walk_makes(monkeypatch):
    """stacks.record walks frames in C where the extension is built (no frame objects created); its keys must be
    the Python walk's: plain, cut at max_depth, with a `<native>` leaf, through generators, and from a frame
    whose function has returned."""
    from cloudprof.agent import stacks

    if stacks._stack_key is None:
        pytest.skip("the C extension is not built for this interpreter")
    frames = {}

    def nest(n, then):
        return nest(n - 1, then) if n else then()

    def gen():
        frames["generator"] = sys._getframe()
        yield 1

    def returned():
        return sys._getframe()

    nest(12, lambda: frames.setdefault("deep", sys._getframe()) and list(gen()))
    frames["returned"] = nest(3, returned)
    release = threading.Event()
    sleeper = threading.Thread(target=nest, args=(5, lambda: release.wait(10)), daemon=True)
    sleeper.start()
    time.sleep(0.05)
    frames["at a C call"] = sys._current_frames()[sleeper.ident]

    walk_in_c = stacks._stack_key
    walked_in_c, walked_in_python = {}, {}
    for name, frame in frames.items():
        for depth in (128, 4, 1):
            for walk, out in ((walk_in_c, walked_in_c), (None, walked_in_python)):
                # one call site for both: the frames above it (this test's, pytest's) are at the same offsets
                monkeypatch.setattr(stacks, "_stack_key", walk)
                out[name, depth] = record(StackTable(), (("thread_name", "t"),), frame, depth, 1, 1, 1)
    release.set()
    assert walked_in_c == walked_in_python
    assert isinstance(walked_in_c["at a C call", 128][1], str)  # the `<native>` leaf
    assert walked_in_c["deep", 4][-2:] == (0, -1)  # cut


def test_main_thread_samples_add_up_to_the_measured_cpu():
    """Expiries set the shares; a window's main-thread CPU is scaled to what the thread's clock measured."""
    sampler = Sampler(sample_hz=100)
    table = sampler._mtable
    table.stacks[((("thread_name", "MainThread"),), 1, 2)] = [3, 30_000_000, 0]  # 3 expiries
    table.stacks[((("thread_name", "MainThread"),), 3, 4)] = [1, 10_000_000, 0]  # 1 expiry
    table.weighted, table.measured = 40_000_000, 80_000_000  # folded expiries: half were counted
    batch = sampler.drain()
    cpu = sorted(acc[1] for t in batch.tables for acc in t.stacks.values())
    assert cpu == [20_000_000, 60_000_000]


def test_a_loop_start_is_told_and_a_failing_callback_never_reaches_the_app():
    import asyncio

    from cloudprof.agent import tasks

    seen = []

    def broken():
        raise RuntimeError("agent bug")

    def told():
        seen.append(asyncio.events._get_running_loop())  # set already: a signal in between sees it

    tasks.on_loop_start(broken)
    tasks.on_loop_start(told)
    try:
        assert asyncio.run(asyncio.sleep(0, result="ran")) == "ran"
    finally:
        tasks.off_loop_start(broken)
        tasks.off_loop_start(told)
    told_times = len(seen)  # asyncio.run runs its loop three times (the coroutine, then two shutdowns)
    assert told_times >= 1 and all(isinstance(loop, asyncio.AbstractEventLoop) for loop in seen), seen
    asyncio.run(asyncio.sleep(0))
    assert len(seen) == told_times  # off
