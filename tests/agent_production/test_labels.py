"""labels(): per thread and per asyncio task, readable by a sampler from outside, capped per key."""

from __future__ import annotations

import asyncio
import collections
import signal
import threading
import time

import pytest

from cloudprof.agent import labels as L
from cloudprof.agent import tasks


@pytest.fixture(autouse=True)
def _fresh():
    L.reset()
    L.configure(max_values_per_key=100)
    yield
    L.reset()
    L.configure(max_values_per_key=100)


def test_nested_blocks_merge_and_restore():
    assert L.current_labels() == ()
    with L.labels(endpoint="/a", tier="web"):
        assert L.current_labels() == (("endpoint", "/a"), ("tier", "web"))
        with L.labels(endpoint="/b"):
            assert L.current_labels() == (("endpoint", "/b"), ("tier", "web"))
        assert L.current_labels() == (("endpoint", "/a"), ("tier", "web"))
    assert L.current_labels() == ()
    assert threading.get_ident() not in L.labels_by_thread({})


def test_other_threads_are_readable_from_a_sampler_thread():
    ready = threading.Barrier(4)
    done = threading.Event()

    def worker(endpoint):
        with L.labels(endpoint=endpoint):
            ready.wait(5)
            done.wait(5)

    threads = [threading.Thread(target=worker, args=(f"/w{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    ready.wait(5)
    snapshot = L.labels_by_thread()
    done.set()
    for t in threads:
        t.join(5)
    for i, t in enumerate(threads):
        assert snapshot[t.ident] == (("endpoint", f"/w{i}"),)
    assert all(t.ident not in L.labels_by_thread() for t in threads)


def test_cardinality_cap_folds_into_other():
    L.configure(max_values_per_key=3)
    got = []
    for i in range(6):
        with L.labels(user=f"u{i}", endpoint="/x"):
            got.append(dict(L.current_labels()))
    assert [g["user"] for g in got] == ["u0", "u1", "u2", "other", "other", "other"]
    assert all(g["endpoint"] == "/x" for g in got)
    with L.labels(user="u1"):  # a value seen before the cap keeps its name
        assert dict(L.current_labels())["user"] == "u1"
    assert L.counters()["labels_folded"] == 3


def test_reserved_keys_are_dropped_not_raised():
    with L.labels(thread_name="x", version="9", endpoint="/ok"):
        assert L.current_labels() == (("endpoint", "/ok"),)
    assert L.counters()["labels_dropped_keys"] == 2


def test_asyncio_tasks_each_see_their_own_labels_from_another_thread():
    """A loop in a worker thread runs tasks with different labels; a sampler thread reads them by task."""
    seen = collections.defaultdict(collections.Counter)
    stop = threading.Event()
    loop_thread_id = {}

    async def handler(endpoint):
        with L.labels(endpoint=endpoint):
            child = asyncio.create_task(inner())  # inherits the labels through its copied context
            for _ in range(20):
                deadline = time.perf_counter() + 0.004
                while time.perf_counter() < deadline:
                    pass  # busy inside the task so the sampler can catch it running
                await asyncio.sleep(0)
            await child

    async def inner():
        for _ in range(20):
            deadline = time.perf_counter() + 0.004
            while time.perf_counter() < deadline:
                pass
            await asyncio.sleep(0)

    async def main():
        loop_thread_id["id"] = threading.get_ident()
        await asyncio.gather(*(asyncio.create_task(handler(f"/e{i}"), name=f"h{i}") for i in range(3)))

    def run_loop():
        asyncio.run(main())
        stop.set()

    thread = threading.Thread(target=run_loop)
    thread.start()
    while not stop.is_set():
        running = tasks.running_tasks()
        by_thread = L.labels_by_thread(running)
        task = running.get(loop_thread_id.get("id"))
        if task is not None:
            seen[tasks.task_name(task)][by_thread[thread.ident]] += 1
        time.sleep(0.001)
    thread.join(10)
    named = {name: counts for name, counts in seen.items() if name.startswith("h")}
    assert len(named) >= 2, seen  # which tasks the sampler catches running depends on GIL timing
    for name, counts in named.items():
        assert set(counts) == {(("endpoint", f"/e{name[1:]}"),)}, (name, counts)
    children = {name: counts for name, counts in seen.items() if not name.startswith("h")}
    assert children, "child tasks were never caught running"
    for counts in children.values():
        assert all(len(labels) == 1 and labels[0][0] == "endpoint" for labels in counts), counts


def test_signal_handler_reads_the_interrupted_task_context():
    """CPU-time signal handler in the main thread sees the labels of the task it interrupted."""
    seen = collections.Counter()

    def on_prof(signum, frame):
        task = tasks.current_task()
        seen[(tasks.task_name(task) if task else None, L.current_labels())] += 1

    async def busy(endpoint, name):
        with L.labels(endpoint=endpoint):
            for _ in range(15):
                start = time.process_time()
                while time.process_time() - start < 0.01:
                    pass
                await asyncio.sleep(0)

    async def main():
        await asyncio.gather(busy("/a", "ta"), busy("/b", "tb"))

    previous = signal.signal(signal.SIGPROF, on_prof)
    signal.setitimer(signal.ITIMER_PROF, 0.002, 0.002)
    try:
        asyncio.run(main())
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, previous)
    by_label = collections.Counter()
    for (task, labels), n in seen.items():
        if task is not None and labels:
            by_label[labels] += n
    assert by_label[(("endpoint", "/a"),)] > 10 and by_label[(("endpoint", "/b"),)] > 10, seen
    assert sum(n for (task, labels), n in seen.items() if task is None and labels) == 0
