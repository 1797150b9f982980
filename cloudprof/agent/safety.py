"""Safety switches: stop the agent, never the app, on a kill-switch file, a blown CPU budget or a memory cap.

Every half second the sampler's thread, at a wake-up it has anyway, runs a round
of checks (`Watchdog.step`): one stat of the kill-switch file (the sampler's
thread makes it as its wait ends, before it takes the GIL back; an `os.stat`
here would let go of the GIL again and, next to a busy main thread, wait for it
once more: about 110 us of CPU a round on this VM), the agent's own CPU against
the rest of the process over the last BUDGET_SPAN_S, and an estimate of the agent's
memory (sample tables sized from a few sampled keys, plus the upload queue). A thread of its own would cost a wake-up
and a GIL hand-off each round, 100-300 us of CPU next to a busy main thread. Any
check tripping stops the agent within about a second: sampling, windows and the
uploader (from a short-lived thread, since stopping joins the sampler's); a breach
flushes what was sampled with a short deadline, the kill switch does not. The app
keeps running; the reason is logged once and written into the last profile's
comments (`stopped_by=`).

The CPU rule allows `budget_factor` (10) times `max_overhead_pct`: the governor
normally keeps the agent under 1x by lowering the rate, so 10x means something
is wrong (pathological stacks, thousands of threads). The agent must also use
more than FLOOR_PCT (5%) of one core: an idle app makes any share look huge (a
fresh gunicorn worker at 100 Hz showed 200% of its near-zero CPU), and there the
governor lowers the rate; there is no bill to protect. The floor is taken over a
second at least: a shorter first span holds the start-up, a one-off cost (an idle
pool parent's 14 ms in its first 0.27 s, its two forks included, was 5.2% of a core
there, and 104.6% of its own CPU: it tripped once in 40 runs on a loaded box).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from itertools import islice

from cloudprof.agent.clocks import process_cpu_ns

__all__ = ["Watchdog", "agent_memory_bytes", "counters"]

BUDGET_SPAN_S = 1.0
MIN_SPAN_S = 0.1  # the CPU rule judges no shorter span (the 5%-of-a-core floor still applies)
FLOOR_PCT = 5.0  # of one core: below this the governor alone handles it (idle apps make any share look huge)
_KEY_SAMPLE = 32
_ENTRY_OVERHEAD = 200  # dict slot + [samples, cpu, wall] list + 3 ints, measured on 3.11 (bytes)

log = logging.getLogger("cloudprof")


def agent_memory_bytes(agent) -> int:
    """Estimate of what the agent holds: unique stacks in the live tables and the upload queue (bytes)."""
    total = 0
    sampler = getattr(agent, "sampler", None)
    if sampler is not None:
        for table in sampler.tables():
            stacks = table.stacks
            n = len(stacks)
            if not n:
                continue
            try:
                sample = list(islice(iter(stacks), _KEY_SAMPLE))
            except RuntimeError:  # changed size while we looked: estimate from the count alone
                sample = []
            per_key = (sum(sys.getsizeof(k) for k in sample) / len(sample)) if sample else 512
            total += int(n * (per_key + _ENTRY_OVERHEAD)) + 16 * len(table.codes)
    uploader = getattr(agent, "uploader", None)
    if uploader is not None:
        try:
            total += uploader.counters().get("queue_bytes", 0)
        except Exception:  # noqa: BLE001
            pass
    return total


def counters(agent) -> dict[str, object]:
    """The agent's safety and memory counters, for each profile's comments."""
    dog = getattr(agent, "watchdog", None)
    out: dict[str, object] = {"agent_memory_bytes": agent_memory_bytes(agent)}
    if dog is not None:
        out["agent_peak_memory_bytes"] = dog.peak_memory
        out["agent_peak_cpu_pct"] = round(dog.peak_share_pct, 3)
        out["safety_cpu_ns"] = dog.cpu_ns
        if dog.tripped:
            out["stopped_by"] = dog.tripped
    return out


class Watchdog:
    """Watches one agent; `start()` has the agent's sampler run `step` twice a second, `stop()` ends that."""

    def __init__(self, agent, *, kill_file: str | None, max_overhead_pct: float, max_memory_bytes: int,
                 budget_factor: float = 10.0, stop_agent=None) -> None:
        self.agent = agent
        self.kill_file = kill_file or None
        self.max_share_pct = budget_factor * max_overhead_pct
        self.max_memory_bytes = max_memory_bytes
        self.tripped = ""
        self.peak_memory = 0
        self.peak_share_pct = 0.0
        self.cpu_ns = 0  # CPU of the rounds (the sampler's thread: also in its agent_cpu_ns)
        self._stop_agent = stop_agent
        self._marks: list[tuple[int, int, int]] = []

    def start(self) -> "Watchdog":
        """Before the sampler starts: the first span of the CPU rule runs from here, so a round as the sampler's
        thread gets going can already judge the CPU its start-up cost (0.2-0.4 s with 40 deep threads)."""
        sampler = self.agent.sampler
        self._marks = [(time.monotonic_ns(), sampler.agent_cpu_ns() + getattr(self.agent, "build_cpu_ns", 0),
                        process_cpu_ns())]
        sampler.checks = sampler.checks + (self.step,)
        sampler.watch_path = self.kill_file
        return self

    def stop(self) -> None:
        sampler = self.agent.sampler
        if sampler is not None:
            sampler.checks = tuple(c for c in sampler.checks if c != self.step)
            sampler.watch_path = None

    def check(self) -> str:
        """One round of checks; the reason to stop, or ""."""
        if self.kill_file and self._kill_file_there():
            return f"kill switch file {self.kill_file}"
        memory = agent_memory_bytes(self.agent)
        self.peak_memory = max(self.peak_memory, memory)
        if self.max_memory_bytes and memory > self.max_memory_bytes:
            return f"agent memory {memory >> 10} KiB over the cap of {self.max_memory_bytes >> 10} KiB"
        sampler = self.agent.sampler
        if sampler is None:
            return ""
        now = time.monotonic_ns()
        own = sampler.agent_cpu_ns() + getattr(self.agent, "build_cpu_ns", 0)
        self._marks.append((now, own, process_cpu_ns()))
        while len(self._marks) > 2 and now - self._marks[1][0] >= BUDGET_SPAN_S * 1e9:
            self._marks.pop(0)
        t0, own0, proc0 = self._marks[0]
        span = now - t0
        if span < MIN_SPAN_S * 1e9:
            return ""
        used = own - own0
        app = max(1, self._marks[-1][2] - proc0 - used)
        share = 100.0 * used / app
        if used > FLOOR_PCT / 100.0 * max(span, BUDGET_SPAN_S * 1e9):
            self.peak_share_pct = max(self.peak_share_pct, share)
            if share > self.max_share_pct:
                return f"agent CPU {share:.1f}% of the app's, over {self.max_share_pct:g}% (10x the budget)"
        return ""

    def _kill_file_there(self) -> bool:
        """Looked up by the sampler's thread as its wait ended, without the GIL, where it could; else here (a GIL
        release, which next to a busy main thread costs a second hand-off in the round)."""
        seen = getattr(self.agent.sampler, "path_seen", None)
        return os.path.exists(self.kill_file) if seen is None else seen

    def step(self) -> None:
        """One round, on the sampler's thread. A trip stops the agent from a thread of its own: stopping joins
        the sampler's thread."""
        if self.tripped:
            return
        t0 = time.thread_time_ns()
        try:
            reason = self.check()
        except Exception:  # noqa: BLE001 - a broken check must not stop the app
            log.debug("cloudprof: safety check failed", exc_info=True)
            reason = ""
        self.cpu_ns += time.thread_time_ns() - t0
        if reason:
            self.tripped = reason
            threading.Thread(target=self._trip, args=(reason,), name="cloudprof-safety", daemon=True).start()

    def _trip(self, reason: str) -> None:
        self.tripped = reason
        killed = reason.startswith("kill switch")
        log.warning("cloudprof: stopping the profiler: %s", reason)
        try:
            if self._stop_agent is not None:
                self._stop_agent(self.agent, flush=not killed)
            else:
                _stop(self.agent, flush=not killed)
        except Exception:  # noqa: BLE001
            log.warning("cloudprof: error while stopping the profiler", exc_info=True)


def _stop(agent, flush: bool) -> None:
    from cloudprof.agent import lifecycle

    # start() holds the lock until the agent is registered: tripping at once (kill file present at start-up)
    # must not leave a stopped agent registered as the process's agent.
    with lifecycle._lock:
        if lifecycle.current() is agent:
            lifecycle.stop(flush=flush, timeout=1.0)  # also forgets it as the process's agent
            return
    agent.stop(flush=flush, timeout=1.0)
