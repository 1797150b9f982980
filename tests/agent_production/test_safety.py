"""Safety switches: a kill-switch file, a blown CPU budget and a memory cap each stop the agent, never the app."""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid

import pytest

import cloudprof
from cloudprof.agent import current, safety
from cloudprof.pprof import decode
from cloudprof.storage import open_store
from tests.agent_production import helpers

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="the CPU-time signal needs the main thread")


def app_step(n=2000) -> int:
    """Deterministic app work whose answer we can check with and without the agent."""
    return sum(i * i % 7 for i in range(n))


EXPECTED_STEP = app_step()


def agent_threads():
    return [t.name for t in threading.enumerate() if t.name.startswith("cloudprof") and t.is_alive()]


def run_app_until(condition, timeout, during=None):
    """Run app work in the main thread until `condition()`; returns (steps, when it became true or None)."""
    steps = 0
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        assert app_step() == EXPECTED_STEP
        steps += 1
        if during is not None:
            during(time.monotonic() - start)
        if condition():
            return steps, time.monotonic()
    return steps, None


@pytest.fixture
def store_url():
    url = f"memory://safety-{uuid.uuid4().hex[:8]}"
    yield url
    cloudprof.stop(flush=False)


def stopped():
    return current() is None and not agent_threads()


def test_kill_switch_file_stops_the_agent_within_a_second(tmp_path, store_url, monkeypatch):
    kill = tmp_path / "cloudprof.kill"
    looked = []  # the threads that looked for the file with os.path.exists
    exists = os.path.exists

    def counted(path):
        if path == str(kill):
            looked.append(threading.current_thread().name)
        return exists(path)

    monkeypatch.setattr(safety.os.path, "exists", counted)
    assert cloudprof.start(enabled=True, service="safety-kill", storage=store_url, kill_switch_file=str(kill),
                           strict=True)
    agent = current()
    assert agent.sampler.mode == "signal"
    touched = {}

    def touch(elapsed):
        if elapsed > 1.5 and not touched:
            kill.touch()
            touched["at"] = time.monotonic()

    steps, at = run_app_until(stopped, 5.0, during=touch)
    assert at is not None, agent_threads()
    assert at - touched["at"] < 1.0
    assert agent.watchdog.tripped.startswith("kill switch")
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    # Next to the busy main thread the sampler's thread stat'd the file as its waits ended, before taking the GIL
    # back (at most its first round, before the handler ticked, looked here): 4 rounds went by before the touch.
    assert looked.count("cloudprof-sampler") <= 1, looked
    # The app carries on, labels included, with the agent gone.
    with cloudprof.labels(endpoint="/after"):
        assert app_step() == EXPECTED_STEP
    # Present at start-up: the agent stops at once.
    assert cloudprof.start(enabled=True, service="safety-kill", storage=store_url, kill_switch_file=str(kill))
    _, at = run_app_until(stopped, 2.0)
    assert at is not None
    # Stopped from a thread of their own, they could not put SIGPROF's handler back (only the main thread may):
    # the next agent takes the signal over from their inert one, as it would from the default.
    kill.unlink()
    assert cloudprof.start(enabled=True, service="safety-kill", storage=store_url, kill_switch_file=str(kill))
    assert (current().sampler.mode, current().sampler.reason) == ("signal", "")
    cloudprof.stop(flush=False)
    assert signal.getsignal(signal.SIGPROF) in (signal.SIG_DFL, signal.SIG_IGN)


def _deep(depth, ready, release):
    if depth:
        return _deep(depth - 1, ready, release)
    ready.release()
    while not release.wait(0.0005):  # awake now and then: a thread that used CPU is walked again at each tick
        pass


def test_cpu_budget_breach_stops_the_agent_within_a_second(store_url):
    # 40 threads 400 frames deep, each waking every 0.5 ms, at 1000 Hz: a tick walks up to 16,000 frames,
    # far over 10x a 0.1% budget.
    ready, release = threading.Semaphore(0), threading.Event()
    threads = [threading.Thread(target=_deep, args=(400, ready, release), daemon=True) for _ in range(40)]
    for t in threads:
        t.start()
    for _ in threads:
        ready.acquire()
    try:
        started = time.monotonic()
        assert cloudprof.start(enabled=True, service="safety-cpu", storage=store_url, sample_hz=1000,
                               max_overhead_pct=0.1, max_depth=1000, strict=True)
        agent = current()
        steps, at = run_app_until(stopped, 5.0)
        assert at is not None, agent_threads()
        assert at - started < 1.0, at - started
        assert "CPU" in agent.watchdog.tripped, agent.watchdog.tripped
        assert agent.watchdog.peak_share_pct > 1.0
        assert app_step() == EXPECTED_STEP
        # The last window was flushed, and says why the agent stopped.
        store = open_store(store_url)
        keys = [info.key for info in store.list("raw/")]
        assert keys
        notes = helpers.comments(decode(store.get(keys[-1])))
        assert "CPU" in notes["stopped_by"]
    finally:
        release.set()
        for t in threads:
            t.join(5)


def test_memory_cap_stops_the_agent(store_url):
    # Every sample gets a new label value (cap raised for the test): unique stacks grow the agent's tables.
    assert cloudprof.start(enabled=True, service="safety-mem", storage=store_url, max_memory_mb=0.03,
                           label_max_values=100_000, sample_hz=200, strict=True)
    agent = current()
    started = time.monotonic()
    at = None
    n = 0
    while time.monotonic() - started < 10.0:
        n += 1
        with cloudprof.labels(request=str(n)):
            assert app_step() == EXPECTED_STEP
        if stopped():
            at = time.monotonic()
            break
    assert at is not None, (agent_threads(), agent.watchdog.peak_memory)
    assert "memory" in agent.watchdog.tripped
    assert agent.watchdog.peak_memory > 0.03 * 1024 * 1024
    assert at - started < 5.0
    assert app_step() == EXPECTED_STEP


class _Clocks:
    """The watchdog's three readings, set by the test: the time, the agent's CPU and the process's (ns)."""

    def __init__(self):
        self.now = self.agent = self.process = 0

    def agent_cpu_ns(self):
        return self.agent

    def tables(self):
        return []


@pytest.mark.parametrize(("span_ms", "agent_ms", "app_ms", "trips"), [
    (270, 14, 13, False),  # an idle pool parent's start-up and two forks: 5.2% of a core over 0.27 s
    (270, 60, 13, True),   # over 5% of a core even counted over a whole second
    (1000, 60, 13, True),
    (1000, 40, 13, False),  # under the floor: the governor's business
    (1000, 60, 600, False),  # 10% of the app's CPU, under 10x the 1% budget
])
def test_the_cpu_rules_floor_is_taken_over_a_second_at_least(monkeypatch, span_ms, agent_ms, app_ms, trips):
    from types import SimpleNamespace

    from cloudprof.agent import safety

    clocks = _Clocks()
    monkeypatch.setattr(safety, "process_cpu_ns", lambda: clocks.process)
    monkeypatch.setattr(safety, "time", SimpleNamespace(monotonic_ns=lambda: clocks.now))
    dog = safety.Watchdog(SimpleNamespace(sampler=clocks), kill_file=None, max_overhead_pct=1.0,
                          max_memory_bytes=0)
    dog._marks = [(0, 0, 0)]  # start(), without adding its step to a real sampler
    clocks.now, clocks.agent, clocks.process = span_ms * 10**6, agent_ms * 10**6, (agent_ms + app_ms) * 10**6
    reason = dog.check()
    assert bool(reason) is trips, reason
    if trips:
        assert reason.startswith("agent CPU")
