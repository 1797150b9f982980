"""Windows: when to cut (every upload interval and at each UTC hour), and folding a cut into a pprof profile.

The fold runs on the agent's window thread, off the sampling path: names and
lines are resolved here, once per (code, offset) per window.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Mapping

from cloudprof.agent.clocks import Clock
from cloudprof.agent.sampler import Batch
from cloudprof.agent.stacks import Symbolizer
from cloudprof.pprof import CPU_SAMPLE_TYPES, Profile, ProfileBuilder

__all__ = ["HOUR_NS", "WindowSchedule", "agent_version", "build_profile", "window_end"]

HOUR_NS = 3600 * 10**9


@lru_cache(maxsize=1)
def agent_version() -> str:
    try:
        from importlib.metadata import version

        return version("cloudprof")
    except Exception:
        return "unknown"


def window_end(start_ns: int, interval_ns: int) -> int:
    """A window ends after the interval or at the next UTC hour, whichever is first, so no window spans an hour."""
    next_hour = (start_ns // HOUR_NS + 1) * HOUR_NS
    end = start_ns + interval_ns
    return end if end < next_hour else next_hour


class WindowSchedule:
    """The current window [start, end) on the wall clock (epoch ns, UTC)."""

    __slots__ = ("clock", "interval_ns", "start_ns", "end_ns")

    def __init__(self, clock: Clock, interval_s: float) -> None:
        self.clock = clock
        self.interval_ns = int(interval_s * 1e9)
        self.start_ns = clock.time_ns()
        self.end_ns = window_end(self.start_ns, self.interval_ns)

    def due(self, now_ns: int) -> bool:
        return now_ns >= self.end_ns

    def seconds_until_due(self, now_ns: int) -> float:
        return max(0.0, (self.end_ns - now_ns) / 1e9)

    def cut(self, now_ns: int) -> tuple[int, int]:
        """Close the current window at `now_ns` (or at its end, if that passed) and open the next one.

        A cut a few milliseconds late still reports the window as ending at its
        boundary; after a longer gap (a suspended process) the next window starts now.
        """
        start = self.start_ns
        end = self.end_ns if now_ns >= self.end_ns else max(now_ns, start)
        self.start_ns = end if now_ns - end < 1_000_000_000 else now_ns
        self.end_ns = window_end(self.start_ns, self.interval_ns)
        return start, end


def build_profile(batch: Batch, start_ns: int, end_ns: int, identity: Mapping[str, str],
                  tags: Mapping[str, str] | None = None, counters: Mapping[str, object] | None = None) -> Profile:
    """One CPU-kind profile: samples/count, cpu/nanoseconds, wall/nanoseconds; identity and counters as comments."""
    builder = ProfileBuilder(CPU_SAMPLE_TYPES, ("cpu", "nanoseconds"), period=max(1, batch.period_ns),
                             default_sample_type="cpu")
    builder.time_nanos = start_ns
    builder.duration_nanos = max(0, end_ns - start_ns)
    symbols = Symbolizer()
    for table in batch.tables:
        codes = table.codes
        for key, values in table.stacks.items():
            builder.add_frames(symbols.frames(key, codes), values, key[0])
    for name in ("service", "version", "environment", "host", "pid"):
        builder.comment(f"{name}={identity.get(name, '')}")
    builder.comment(f"agent=cloudprof/{agent_version()}")
    if tags:
        builder.comment("tags=" + ",".join(f"{k}={v}" for k, v in sorted(tags.items())))
    wall_s = (batch.mono_end_ns - batch.mono_start_ns) / 1e9
    share = 100.0 * batch.agent_cpu_ns / max(1, batch.process_cpu_ns - batch.agent_cpu_ns)
    builder.comment(f"sampler={batch.mode}")
    if batch.reason:
        builder.comment(f"sampler_fallback={batch.reason}")
    builder.comment(f"thread_cpu={'timers' if not batch.timers_reason else 'ticks'}")
    if batch.timers_reason:
        builder.comment(f"thread_cpu_fallback={batch.timers_reason}")
    builder.comment(f"timer_samples={batch.timer_samples}")
    builder.comment(f"timer_samples_dropped={batch.timer_dropped}")
    builder.comment(f"sample_hz={1e9 / max(1, batch.period_ns):.1f}")
    builder.comment(f"ticks_per_s={batch.ticks / wall_s if wall_s > 0 else 0:.1f}")
    builder.comment(f"ticks={batch.ticks}")
    builder.comment(f"signal_samples={batch.signal_samples}")
    builder.comment(f"agent_cpu_ns={batch.agent_cpu_ns}")
    builder.comment(f"process_cpu_ns={batch.process_cpu_ns}")
    builder.comment(f"agent_cpu_pct={share:.3f}")
    builder.comment(f"sampler_errors={batch.errors}")
    for name, value in (counters or {}).items():
        builder.comment(f"{name}={value}")
    return builder.build()
