"""Clocks the agent reads: wall and monotonic time (injectable), per-thread and process CPU time.

On Linux a thread's CPU clock id is derived from its native id, as glibc's
pthread_getcpuclockid does: reading it after the thread exited fails with EINVAL
instead of touching a freed pthread_t.

The process's CPU is read with getrusage, not the process CPU clock: while a
process-wide CPU timer is armed (our ITIMER_PROF), Linux answers that clock from
the timer's running total, which advances only at scheduler ticks and context
switches (4 ms apart here): a 2 ms burn read 0.01-2.1 ms. getrusage sums the
threads' precise run times, the exited ones' included.
"""

from __future__ import annotations

import sys
import time

try:
    import resource
except ImportError:  # not POSIX
    resource = None  # type: ignore[assignment]

__all__ = ["Clock", "ManualClock", "SYSTEM_CLOCK", "process_cpu_ns", "thread_cpu_clock", "thread_cpu_ns"]

_CPUCLOCK_PERTHREAD_SCHED = 6  # CPUCLOCK_PERTHREAD_MASK (4) | CPUCLOCK_SCHED (2), linux/posix-timers.h


class Clock:
    """Real time: `time_ns` (epoch, UTC windows) and `monotonic_ns` (ticks, durations)."""

    __slots__ = ()

    def time_ns(self) -> int:
        return time.time_ns()

    def monotonic_ns(self) -> int:
        return time.monotonic_ns()


class ManualClock(Clock):
    """A clock that moves only when told to, for scheduler and governor tests."""

    __slots__ = ("now_ns", "mono_ns")

    def __init__(self, now_ns: int = 1_700_000_000 * 10**9, mono_ns: int = 10**9) -> None:
        self.now_ns = now_ns
        self.mono_ns = mono_ns

    def time_ns(self) -> int:
        return self.now_ns

    def monotonic_ns(self) -> int:
        return self.mono_ns

    def advance(self, seconds: float) -> None:
        step = int(seconds * 1e9)
        self.now_ns += step
        self.mono_ns += step


SYSTEM_CLOCK = Clock()


def thread_cpu_clock(native_id: int | None, ident: int | None = None) -> int | None:
    """Clock id of a thread's CPU time, or None where this platform has none."""
    if sys.platform.startswith("linux") and native_id:
        return (~native_id << 3) | _CPUCLOCK_PERTHREAD_SCHED
    getcpuclockid = getattr(time, "pthread_getcpuclockid", None)
    if getcpuclockid is not None and ident is not None:
        try:
            return getcpuclockid(ident)
        except OSError:
            return None
    return None


def thread_cpu_ns(clock_id: int) -> int:
    """CPU time of a thread by its clock id; OSError once the thread is gone."""
    return time.clock_gettime_ns(clock_id)


def process_cpu_ns() -> int:
    """CPU time of the whole process (every thread, live or exited), to the microsecond."""
    if resource is None:
        return time.process_time_ns()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return round((usage.ru_utime + usage.ru_stime) * 1e9)
