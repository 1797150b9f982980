"""Overhead governor: keeps the agent's own CPU under a share of the process's by moving the sample rate.

The agent's CPU is what it can measure exactly: the sampler thread's CPU clock
plus the time spent inside the CPU-time signal handler. It is compared with the
rest of the process's CPU over each step (about a second). A process that is
nearly idle would make any cost look huge, so a cost below `floor_pct` of one
core is always allowed: there is no CPU bill to protect there.
"""

from __future__ import annotations

__all__ = ["Governor"]


class Governor:
    """Decides the sampling rate from measured costs; holds no clock and no thread (testable by feeding numbers)."""

    __slots__ = ("target_hz", "max_pct", "min_hz", "floor_pct", "hz", "last_share_pct")

    def __init__(self, target_hz: float, max_pct: float, *, min_hz: float = 1.0, floor_pct: float = 0.05) -> None:
        self.target_hz = float(target_hz)
        self.max_pct = float(max_pct)
        self.min_hz = min(float(min_hz), self.target_hz)
        self.floor_pct = floor_pct
        self.hz = self.target_hz
        self.last_share_pct = 0.0

    def update(self, own_ns: int, process_ns: int, wall_ns: int) -> float:
        """One step: the agent used `own_ns` of the `process_ns` CPU the process used in `wall_ns`; returns the new rate."""
        if wall_ns <= 0:
            return self.hz
        app_ns = max(process_ns - own_ns, 1)
        share = 100.0 * own_ns / app_ns
        self.last_share_pct = share
        below_floor = own_ns <= self.floor_pct / 100.0 * wall_ns
        if share > self.max_pct and not below_floor:
            # Cost scales with the rate; aim 10% under the budget so noise does not flap it.
            self.hz = max(self.min_hz, self.hz * 0.9 * self.max_pct / share)
        elif self.hz < self.target_hz and (share < 0.7 * self.max_pct or below_floor):
            room = 0.8 * self.max_pct / share if share > 0 else 2.0
            self.hz = min(self.target_hz, self.hz * min(2.0, max(1.1, room)))
        return self.hz
