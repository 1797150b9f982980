"""At most `max_threads` stacks per tick, chosen round-robin, with weights that keep totals unbiased.

A sampled thread carries every tick (samples) and all the wall time since it was
last sampled, and its CPU is already the delta of its own CPU clock since then;
so skipping a thread for a few ticks moves its values in time, never loses or
inflates them. Round-robin over the threads in `sys._current_frames()` order
(stable between ticks) gives each thread a turn every ceil(N / max_threads) ticks.
"""

from __future__ import annotations

__all__ = ["ThreadPicker"]


class ThreadPicker:
    """`weights(idents, tick, now_ns, wall_ns, always)` -> {ident: (samples, wall_ns)} for this tick, or None for all."""

    __slots__ = ("max_threads", "cursor", "last")

    def __init__(self, max_threads: int = 64) -> None:
        self.max_threads = max(1, int(max_threads))
        self.cursor = 0
        self.last: dict[int, tuple[int, int]] = {}  # ident -> (tick, monotonic ns) when last sampled

    def weights(self, idents, tick: int, now_ns: int, wall_ns: int, always: int | None = None):
        """None when every thread is sampled with weight (1, wall_ns) this tick (the common, cheap case)."""
        last = self.last
        n = len(idents)
        if n <= self.max_threads and not last:
            return None
        default = (tick - 1, now_ns - wall_ns)
        if n <= self.max_threads:
            chosen = idents
        else:
            for ident in idents:  # a thread owes its ticks from when it was first seen over the cap
                if ident not in last:
                    last[ident] = default
            others = [i for i in idents if i != always]
            k = self.max_threads - (1 if always is not None and len(others) < n else 0)
            k = max(1, k)
            start = self.cursor % len(others) if others else 0
            chosen = (others[start:start + k] + others[:max(0, start + k - len(others))])[:k]
            self.cursor = start + k
            if always is not None and len(others) < n:
                chosen.append(always)
        out = {}
        for ident in chosen:
            then_tick, then_ns = last.get(ident, default)
            out[ident] = (max(1, tick - then_tick), max(0, now_ns - then_ns))
        if n <= self.max_threads:
            last.clear()  # back under the cap: every thread caught up, nothing to remember
        else:
            for ident in chosen:
                last[ident] = (tick, now_ns)
            if len(last) > 2 * n + 64:  # forget threads that ended
                alive = set(idents)
                for ident in [i for i in last if i not in alive]:
                    del last[ident]
        return out
