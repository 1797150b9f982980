"""Overhead governor: keeps the agent's own CPU under a share of the process's by moving the sample rates.

The agent's CPU is what it can measure exactly: the signal handler's time and its
threads' CPU clocks. It is compared with the rest of the process's CPU over each
step (about a second). The budget is `max_pct` of the app's CPU, but never less
than `floor_pct` of one core: a nearly idle process would make any cost look huge,
and there is no CPU bill to protect there.

Two rates, because the two costs scale differently. The CPU-time signal fires per
period of the process's CPU, so its cost is a fixed share of the app's CPU and
nothing at all while the app idles. The all-thread ticks (wall time, other
threads; taken by the sampler thread, or by the handler when it is due) come per
period of wall time, so in an idle process they are the whole cost. Over budget,
the governor lowers the rate of whichever part cost more (only the ticks' when the
app barely ran); so an idle process keeps its wall ticks cheap without slowing the
signal, and a burst of work after a quiet minute is sampled at the full rate from
its first millisecond.

The budget holds over time, not only step by step: CPU over the budget in one step
(the first seconds' one-off costs: new code objects analysed, first pulls) is owed,
and paid back by aiming the next steps under it (by a fifth of the debt a step, never
below half the budget; the debt is capped at five steps' budgets); a nearly idle step
owes nothing. Judged step by step, a 0.25% budget ended 5.5 s runs at 0.30-0.33% of
the app's CPU: their first two seconds ran at the full rate.
"""

from __future__ import annotations

__all__ = ["Governor"]

_PAYBACK_STEPS = 5  # a debt is aimed off over about this many steps


class Governor:
    """Decides the sampling rates from measured costs; holds no clock and no thread (testable by feeding numbers).

    `hz` is the CPU-time signal's rate, `tick_hz` (never above it) the sampler thread's.
    """

    __slots__ = ("target_hz", "max_pct", "min_hz", "floor_pct", "hz", "tick_hz", "last_share_pct", "ticks_slowed_idle",
                 "debt_ns")

    def __init__(self, target_hz: float, max_pct: float, *, min_hz: float = 1.0, floor_pct: float = 0.05) -> None:
        self.target_hz = float(target_hz)
        self.max_pct = float(max_pct)
        self.min_hz = min(float(min_hz), self.target_hz)
        self.floor_pct = floor_pct
        self.hz = self.tick_hz = self.target_hz
        self.last_share_pct = 0.0
        self.ticks_slowed_idle = False  # the last cut of tick_hz was for a nearly idle app (the floor budget)
        self.debt_ns = 0  # the agent's CPU over the budget so far, not yet paid back

    def reset(self) -> None:
        """Back to the target rates (the debt stays: it is CPU spent)."""
        self.hz = self.tick_hz = self.target_hz
        self.ticks_slowed_idle = False

    def update(self, own_ns: int, process_ns: int, wall_ns: int, thread_ns: int = 0) -> float:
        """One step: the agent used `own_ns` (of which its threads `thread_ns`) of the `process_ns` CPU the
        process used in `wall_ns`; returns the new signal rate (`tick_hz` is updated too)."""
        if wall_ns <= 0:
            return self.hz
        app_ns = max(process_ns - own_ns, 1)
        self.last_share_pct = 100.0 * own_ns / app_ns
        floor = self.floor_pct / 100.0 * wall_ns
        budget = max(self.max_pct / 100.0 * app_ns, floor)
        idle = budget == floor  # the app barely ran: the signal, which fires per CPU, cannot be the cost
        if idle:
            self.debt_ns = 0  # no CPU bill to protect, nothing owed: a burst after it starts at the full rate
        else:
            # capped: an agent over budget for long (costs the rate does not lower) is not held at half for as long
            self.debt_ns = min(max(0, self.debt_ns + own_ns - budget), _PAYBACK_STEPS * budget)
            budget = max(budget - self.debt_ns / _PAYBACK_STEPS, 0.5 * budget)
        if own_ns > budget:
            # Cost scales with the rate; aim 10% under the budget so noise does not flap it.
            cut = 0.9 * budget / own_ns
            if thread_ns * 2 >= own_ns or idle:
                self.tick_hz = max(self.min_hz, self.tick_hz * cut)
                self.ticks_slowed_idle = idle
            else:
                self.hz = max(self.min_hz, self.hz * cut)
                self.tick_hz = min(self.tick_hz, self.hz)
        elif own_ns < 0.7 * budget:
            # Toward 80% of the budget, at most 10x a step: an idle process turning busy is back at the full
            # rate within a few seconds.
            step = min(10.0, max(1.1, 0.8 * budget / own_ns)) if own_ns > 0 else 10.0
            self.hz = min(self.target_hz, self.hz * step)
            self.tick_hz = min(self.hz, self.tick_hz * step)
        return self.hz
