"""Wall ticks taken by the signal handlers (_threadcpu.wall_tick): while a thread that holds the GIL takes a CPU-time
signal, no other thread can run Python, so the handler reads every thread's stack for the wall tick that is due.
Behind busy threads a sampler thread waits for the GIL and ticks a few dozen times a second; these hold the rate.
They are used only while their records need nothing that Python alone knows (labels, tasks, threads without a
timer), and the sampler thread takes over when they stop (every thread blocked)."""

from __future__ import annotations

import _thread
import threading
import time

import pytest

from cloudprof.agent import _threadcpu
from cloudprof.agent import labels as labels_module
from cloudprof.agent.sampler import Sampler, timers_unavailable_reason
from cloudprof.agent.stacks import Symbolizer
from tests import support


@pytest.fixture(autouse=True)
def _built(monkeypatch):
    reason = timers_unavailable_reason()
    if reason:
        support.missing(f"per-thread CPU timers unavailable: {reason}")
    monkeypatch.setitem(labels_module._state, "used", False)  # earlier tests may have used labels


def spin(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(i * i for i in range(300))


def by_thread(batch):
    """thread name -> {leaf-most function of interest or the leaf: [samples, cpu_ns, wall_ns]}; and the agent's
    own functions seen (but for the test's drain())."""
    out, agent, sym = {}, set(), Symbolizer()
    for table in batch.tables:
        for key, (n, cpu, wall) in table.stacks.items():
            names = [f[0] for f in sym.frames(key, table.codes)]
            if "Sampler.drain" not in names:
                agent.update(name for name in names if name.startswith("Sampler."))
            leaf = next((name for name in names if name in ("spin", "Event.wait")), names[0])
            acc = out.setdefault(dict(key[0])["thread_name"], {}).setdefault(leaf, [0, 0, 0])
            acc[0] += n
            acc[1] += cpu
            acc[2] += wall
    return out, agent


def wall_of(rows):
    return sum(acc[2] for acc in rows.values())


def test_busy_threads_get_wall_ticks_from_the_handlers():
    """4 threads that hold the GIL, one blocked, the main thread in join(): the handlers take nearly all the wall
    ticks, at the rate asked (a sampler thread behind such threads ticks 7-30 times a second), and every thread's
    wall time adds up to its life, at the stack where it spent it."""
    blocked = threading.Event()
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    workers = [threading.Thread(target=spin, args=(0.6,), name=f"busy-{i}") for i in range(4)]
    waiter = threading.Thread(target=blocked.wait, name="waiter")
    sampler.start()
    try:
        c0 = _threadcpu.counters()["wall_ticks"]
        t0 = time.monotonic()
        waiter.start()
        for t in workers:
            t.start()
        walls_on = []
        while any(t.is_alive() for t in workers):
            walls_on.append(sampler._walls)
            time.sleep(0.05)
        for t in workers:
            t.join()
        lived = time.monotonic() - t0
        batch = sampler.drain()
        handler_ticks = _threadcpu.counters()["wall_ticks"] - c0
    finally:
        blocked.set()
        waiter.join()
        sampler.stop()
    span = (batch.mono_end_ns - batch.mono_start_ns) / 1e9
    assert sum(walls_on) >= 0.8 * len(walls_on), walls_on
    assert handler_ticks >= 0.8 * batch.ticks, (handler_ticks, batch.ticks)
    assert batch.ticks / span >= 70, (batch.ticks, span)  # 100 asked
    rows, agent = by_thread(batch)
    assert not agent, agent
    for i in range(4):
        busy = rows[f"busy-{i}"]
        assert busy["spin"][2] >= 0.9 * wall_of(busy), busy  # its wall time is where it ran
        assert wall_of(busy) <= 1.05 * lived * 1e9, (busy, lived)
    waited = rows["waiter"]
    assert waited["Event.wait"][2] >= 0.9 * lived * 1e9, (waited, lived)
    assert waited["Event.wait"][1] < 0.01e9  # no CPU: it waited
    assert wall_of(rows["MainThread"]) == pytest.approx(span * 1e9, rel=0.05)


def test_a_busy_main_threads_c_handler_takes_its_wall_ticks():
    """Main + 3 busy threads: the main thread's C handler takes the wall ticks due at its signals too, as the other
    threads' do. Its Python handler took them before (it was first due), walking every thread in Python: 1.2% of the
    CPU by the agent's clocks on this VM, 0.8% now. Every thread's wall time still adds up to the span."""
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    workers = [threading.Thread(target=spin, args=(0.8,), name=f"busy-{i}") for i in range(3)]
    sampler.start()
    try:
        for t in workers:
            t.start()
        spin(0.2)
        walls, handler_ticks, c0 = sampler._walls, sampler.handler_ticks, _threadcpu.counters()["wall_ticks"]
        runs, tick_ns = sampler.handler_runs, sampler.handler_tick_ns
        spin(0.5)
        batched = sampler._batched
        handler_ticks, runs = sampler.handler_ticks - handler_ticks, sampler.handler_runs - runs
        tick_ns = sampler.handler_tick_ns - tick_ns
        c_ticks = _threadcpu.counters()["wall_ticks"] - c0
        for t in workers:
            t.join()
        batch = sampler.drain()
    finally:
        sampler.stop()
    assert walls and batched  # the main thread's records are folded in batches (test_sampler), and its Python
    assert handler_ticks <= 3, (handler_ticks, runs, c_ticks)  # handler took no tick (50 before, every signal's)
    assert c_ticks >= 70 * 0.5 * 0.8, c_ticks  # 100 a second asked: the C handlers took them
    assert tick_ns > 0  # the main thread's C ticks are the ticks' cost to the governor
    span = (batch.mono_end_ns - batch.mono_start_ns) / 1e9
    rows, agent = by_thread(batch)
    assert not agent, agent
    assert wall_of(rows["MainThread"]) == pytest.approx(span * 1e9, rel=0.05)
    for i in range(3):
        assert wall_of(rows[f"busy-{i}"]) <= 1.05 * span * 1e9


@pytest.mark.parametrize("max_threads", [64, 8])
def test_the_handlers_take_the_wall_ticks_of_as_many_threads_as_max_threads(max_threads):
    """30 waiting threads and a busy main thread. Up to max_threads app threads the C handlers take the wall ticks
    (they walk every thread); above it Python's ticks pick at most max_threads stacks a tick (test_threads). The
    handlers took them for at most 16 before: here, at 100 Hz, the Python handler's ticks cost 39-53 ms of CPU a
    second against 7 ms for the C handlers'. Either way every waiting thread carries its wall time."""
    release = threading.Event()
    waiters = [threading.Thread(target=release.wait, name=f"idle-{i:02d}") for i in range(30)]
    for t in waiters:
        t.start()
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    sampler.picker.max_threads = max_threads
    sampler.start()
    try:
        t0 = time.monotonic()
        spin(0.3)
        runs, c0 = sampler.handler_runs, _threadcpu.counters()["wall_ticks"]
        spin(0.5)
        walls, runs = sampler._walls, sampler.handler_runs - runs
        c_ticks = _threadcpu.counters()["wall_ticks"] - c0
        batch = sampler.drain()
        lived = time.monotonic() - t0
    finally:
        release.set()
        sampler.stop()
        for t in waiters:
            t.join()
    if max_threads == 64:
        assert walls and c_ticks >= 70 * 0.5 * 0.8, (walls, c_ticks)  # 100 a second asked
        assert runs <= 5, runs  # batched: the Python handler ran about twice a second
    else:
        assert not walls and c_ticks == 0 and runs >= 30, (walls, c_ticks, runs)
    rows, agent = by_thread(batch)
    assert not agent, agent
    for i in range(30):
        wall = wall_of(rows[f"idle-{i:02d}"])
        assert 0.8 * lived * 1e9 <= wall <= 1.05 * lived * 1e9, (i, wall, lived)


def test_the_handlers_wall_ticks_name_the_c_call_a_thread_waits_in():
    """A thread blocked in a C call shows that call as its leaf in the handlers' wall ticks, as in the sampler
    thread's (without CPU timers there are no handlers' ticks)."""
    leaves = {}
    for timers in (True, False):
        blocked = threading.Event()
        sampler = Sampler(sample_hz=100, max_overhead_pct=100, thread_timers=timers)
        waiter = threading.Thread(target=blocked.wait, name="waiter")
        busy = threading.Thread(target=spin, args=(0.5,), name="busy")
        sampler.start()
        try:
            waiter.start()
            busy.start()
            busy.join()
            batch = sampler.drain()
            handler_ticks = sampler._timer_counters()["wall_ticks"]
        finally:
            blocked.set()
            waiter.join()
            sampler.stop()
        assert (handler_ticks > 20) == timers, handler_ticks
        sym, walls = Symbolizer(), {}
        for table in batch.tables:
            for key, (_n, _cpu, wall) in table.stacks.items():
                if dict(key[0])["thread_name"] == "waiter" and wall:
                    leaf = sym.frames(key, table.codes)[0][0]
                    walls[leaf] = walls.get(leaf, 0) + wall
        leaves[timers] = max(walls, key=walls.get)
    assert leaves[True] == leaves[False] and leaves[True].startswith("<native>"), leaves


def test_the_first_labels_give_the_wall_ticks_back_to_python():
    """A record is labelled when Python pulls it: once labels are used, the sampler's own ticks take over, and
    the samples taken before the labels keep the labels of before."""
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    seen = {}

    def worker():
        spin(0.4)
        seen["before"] = sampler._walls
        with labels_module.labels(request="r1"):
            spin(0.4)
        seen["after"] = sampler._walls

    thread = threading.Thread(target=worker, name="worker")
    sampler.start()
    try:
        thread.start()
        spin(1.2)  # the main thread busy throughout, so its handler pulls the samples at its ticks
        thread.join()
        batch = sampler.drain()
    finally:
        sampler.stop()
    assert seen == {"before": True, "after": False}
    cpu = {}
    for table in batch.tables:
        for key, (_n, c, _wall) in table.stacks.items():
            labels = dict(key[0])
            if labels["thread_name"] == "worker":
                cpu[labels.get("request")] = cpu.get(labels.get("request"), 0) + c
    assert cpu.get("r1", 0) == pytest.approx(0.4e9, rel=0.15), cpu
    assert cpu.get(None, 0) == pytest.approx(0.4e9, rel=0.15), cpu


def test_a_thread_without_a_timer_gives_the_wall_ticks_back_to_python():
    """A thread started outside `threading` has no timer, so the handlers cannot take its stack: the sampler
    thread's next look finds it and takes the ticks again, which carry its wall time from then on. (The main thread
    sleeps, so its handler does not run: the look, every 0.5 s, comes 0.45-0.57 s after the thread starts behind a
    busy thread. With 0.8 s of life its wall was 14-27% of it, below the 30% asked, in 2 runs of 10 and once in CI.)"""
    stop, ended = threading.Event(), threading.Event()
    lived = []

    def work():
        while not stop.is_set():
            spin(0.01)

    def raw():
        t0 = time.monotonic()
        work()
        lived.append((time.monotonic() - t0, time.thread_time(), _thread.get_ident()))
        ended.set()

    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    busy = threading.Thread(target=work, name="busy")
    sampler.start()
    try:
        busy.start()
        time.sleep(0.3)
        on_before = sampler._walls
        _thread.start_new_thread(raw, ())
        time.sleep(1.5)  # the sampler thread looks every 0.5 s
        on_after = sampler._walls
        stop.set()
        ended.wait(10)
        busy.join()
        batch = sampler.drain()
    finally:
        stop.set()
        sampler.stop()
    assert on_before and not on_after
    rows, _ = by_thread(batch)
    wall, cpu, ident = lived[0]
    raw_rows = rows[f"Thread-{ident}"]  # not a `threading` thread: named by its ident
    assert sum(acc[1] for acc in raw_rows.values()) == pytest.approx(cpu * 1e9, rel=0.10), (raw_rows, cpu)
    assert wall_of(raw_rows) >= 0.3 * wall * 1e9, (raw_rows, wall)  # its wall from the first look on


def test_a_wall_tick_while_the_main_thread_is_in_the_agents_handler_shows_the_app_under_it(monkeypatch):
    """The Python signal handler can let go of the GIL (here it sleeps a little at every signal), and a worker's
    handler may then take a wall tick: the main thread's stack is the app's frames under the handler, as in the
    sampler thread's ticks, and its wall time in `spin` is the time it spent there. (Not a share of all its
    wall time: how long `start()` and `join()` wait behind the busy workers is CPython's GIL hand-off. With no
    agent, and this test's handler that sleeps 2 ms, the second `start()` took 63 ms as a median of 40 runs and
    up to 980 ms; a clean-clone CI run had it at 214 ms.)"""
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    sample_main = sampler._sample_main

    def and_sleep(frame, t0):
        try:
            return sample_main(frame, t0)
        finally:
            time.sleep(0.002)  # the GIL to the workers, whose handlers take the wall ticks meanwhile

    monkeypatch.setattr(sampler, "_sample_main", and_sleep)
    workers = [threading.Thread(target=spin, args=(0.6,), name=f"busy-{i}") for i in range(2)]
    sampler.start()
    try:
        c0 = _threadcpu.counters()["wall_ticks"]
        for t in workers:
            t.start()
        t0 = time.monotonic_ns()
        spin(0.6)
        spun = time.monotonic_ns() - t0
        for t in workers:
            t.join()
        batch = sampler.drain()
        handler_ticks = _threadcpu.counters()["wall_ticks"] - c0
    finally:
        sampler.stop()
    assert handler_ticks > 50, handler_ticks
    rows, agent = by_thread(batch)
    assert not agent, agent
    assert rows["MainThread"]["spin"][2] == pytest.approx(spun, rel=0.05), (rows["MainThread"], spun)


def test_a_blocked_threads_ticks_keep_its_stack_across_windows():
    """A thread whose stack has not changed gets frameless (SAME) records from the handlers: each adds to its
    previous stack, also when that stack is in the previous window's table (it is carried over with its code)."""
    blocked = threading.Event()
    stop = threading.Event()
    sampler = Sampler(sample_hz=100, max_overhead_pct=100)
    waiter = threading.Thread(target=blocked.wait, name="waiter")
    busy = threading.Thread(target=lambda: [spin(0.01) for _ in iter(stop.is_set, True)], name="busy")
    sampler.start()
    try:
        waiter.start()
        busy.start()
        time.sleep(0.4)
        assert sampler._walls
        first = sampler.drain()
        c0 = _threadcpu.counters()["wall_ticks"]
        time.sleep(0.6)
        second = sampler.drain()
        handler_ticks = _threadcpu.counters()["wall_ticks"] - c0
    finally:
        stop.set()
        blocked.set()
        waiter.join()
        busy.join()
        sampler.stop()
    assert handler_ticks >= 30, handler_ticks
    for batch in (first, second):
        span = batch.mono_end_ns - batch.mono_start_ns
        rows, _ = by_thread(batch)  # names resolve: the tables hold the codes their keys name
        waited = rows["waiter"]
        assert waited["Event.wait"][2] >= 0.9 * wall_of(waited), waited
        assert wall_of(waited) >= (0.9 if batch is second else 0.5) * span, (waited, span)
