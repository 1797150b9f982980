"""The sampler: CPU samples of the main thread from the CPU-time signal, CPU and wall samples of every thread.

Why a signal: a sampler thread only runs when it gets the GIL, so it sees other
threads mostly where they *release* the GIL (I/O, zlib, hashing) and misplaces
CPU. ITIMER_PROF fires after every `period` of process CPU, and CPython runs the
Python handler in the main thread at its next check point (a function's entry,
a loop's back-edge, the end of a call into C). Where the main thread was when
the signal came is recorded by a C handler in front of Python's (`_threadcpu`,
`hook_main`), as the timers below do for other threads; the Python handler folds
those records with the labels of the moment. So the sample lands where the main
thread spent the CPU, even in code with no check point of its own (a sort key
called from C `sorted`: the next check point is the key's next entry). Without
the extension, or when the kernel hands the signal to another thread, the
handler's own frame stands in (see `where_cpu_went` below).

Batches: while the main thread is the app's only thread and no labels can change
between samples (none used yet, no event loop running in it), the C handler
chains to the Python handler only every `_BATCH_NS` (half a second), which then
folds the records since (fifty at 100 Hz), each with its own weight (the main
thread's CPU since the previous record, from its clock at the signal) and wall
time. A run costs 100-170 us of CPU on this VM beyond its records' folds (cold
caches): every 100 ms, the handlers' CPU with one busy thread was 2.6-2.8 ms a
second, every 0.5 s 1.1-1.5 ms. Each batch also looks for threads started outside
`threading`; a second app thread or the first labels end the batches (every
signal goes to Python again). The records not folded yet are the handler's
ticks: the sampler thread does not fill in for them.

Other threads get the same treatment from their own CPU timers (`_threadcpu`, a
C extension): after every `period` of a thread's CPU the kernel signals that very
thread, and the C handler copies its frames, without the GIL. A sampler thread
would see a thread mostly where it releases the GIL (a thread that hashes showed
100% in hashing against a truth near 50%), and behind busy threads it waits for
the GIL and falls to 40-60 ticks a second; the timers keep 100 samples per second
of each thread's CPU. A thread started through `threading` makes its timer itself
as it starts, before its target runs (see `_on_thread_boot`); one already running
gets it at a tick; one started outside `threading` gets none (its ticks weigh it
by its CPU clock). Where the extension is not built (or `thread_cpu_timers` is
off), the ticks weigh each thread by its CPU clock instead, and profiles say so.

Weights come from the kernel, not from the nominal period. Timer samples: the
thread's CPU since its previous sample. Other threads without a timer: the
delta of each thread's own CPU clock since its previous sample; wall: the time
since the previous tick. The main thread: the process CPU between the timer
expiry behind its previous signal and the one behind this signal (the CPU delta
since the previous handler, less the CPU since this expiry plus that since the
previous one: `getitimer` gives it as the period less the time left), times the
main thread's part of the process CPU; a window's main-thread samples are then
scaled to add up to the CPU its clock measured. Not the plain CPU delta: the
handler runs at the next check point, so after a long C call (zlib, hashing,
JSON) the delta also holds the time before the call began, and would charge it
to the call, by 10-25 points on such programs. (Batched, the C handler reads the
main thread's clock at the signal itself, so the plain delta is right.) Without a copy, a sample taken at
a function's entry RESUME is the caller's (stacks.where_cpu_went). Rate changes and missed
ticks leave totals right. A thread with no CPU since its previous sample has not
moved: its previous stack takes the tick's wall time without a new walk. A
thread that ends reports its clock as it goes (exits.py): its CPU since its last
sample, or all of it if it lived between two ticks, is not lost.

Ticks (one stack per thread, for wall time and CPU without a timer) are taken
by the signal handler while the main thread runs Python, which costs no thread
wake-up and no GIL hand-off, and by the sampler thread when the handler is not
running (main thread blocked or idle). With CPU timers, the C handlers take them
too: a thread that holds the GIL when its timer (or SIGPROF) fires is a moment
when no other thread can run Python, so its handler reads every thread's stack
for the tick that is due (`_threadcpu.wall_tick`). Behind busy threads, where
the sampler thread waits for the GIL and ticks a few dozen times a second, that
holds the rate, for none of the thread's wake-ups. They are used while the
records need nothing Python alone knows (see `_update_walls`); the sampler
thread then only looks at the threads every `_CHECK_NS`. The sampler thread then checks back only
every `_WATCH_NS`, and runs the `checks` (the safety watchdog) at the same wake-up:
next to a busy main thread every wake-up costs 100-300 us of CPU (the GIL). In
between it waits in `_threadcpu.watch`, without the GIL and without waking while
the handlers tick, and fills in 20-40 ms after their last tick (else a shorter
wait after a burst went to the next burst's stack at the handler's tick). While
it fills in, it leaves the ticks to the handler whenever the handler ticked in the
last period and a half, and stops filling in once the handler takes 80% of them
(checked every `_REFILL_NS`). Without a usable signal (not started from the main
thread, the app owns SIGPROF or ITIMER_PROF, no setitimer) the thread does
everything and the reason is reported.

Busy threads pass the GIL round once per switch interval (5 ms), so a thread
that wants it waits about one interval per busy thread: behind four, one
requester cannot tick every 10 ms. Without CPU timers, when the measured wait
says so, up to `_MAX_TICKERS` threads take turns at the deadlines (with them, the
ticks only carry wall time, and one requester is enough).

Concurrency: each writer (handler, threads) owns its StackTables and sets a busy
flag before it reads the table attribute; `drain()` swaps tables and waits for
the flag, so a window never loses a sample to a race or iterates a dict being
written. Ticks are serialised by a lock taken without blocking.
"""

from __future__ import annotations

import _thread
import atexit
import os
import signal
import sys
import threading
import time
from functools import partial
from typing import NamedTuple

from cloudprof.agent import exits, tasks
from cloudprof.agent.clocks import SYSTEM_CLOCK, Clock, process_cpu_ns, thread_cpu_clock, thread_cpu_ns
from cloudprof.agent.fairness import ThreadPicker
from cloudprof.agent.governor import Governor
from cloudprof.agent.labels import current_extra, may_change, off_first_use, on_first_use, tick_labels
from cloudprof.agent.native import answers_version, site_at
from cloudprof.agent.stacks import StackTable, record, record_copy, where_cpu_went

try:
    from cloudprof.agent import _threadcpu
except ImportError:  # not built: no compiler at install time, or not CPython on Linux
    _threadcpu = None

__all__ = ["AGENT_THREAD_PREFIX", "Batch", "Sampler", "next_deadline", "signal_unavailable_reason",
           "timers_unavailable_reason"]

AGENT_THREAD_PREFIX = "cloudprof"  # threads named so are the agent's own and are not sampled
_WATCH_NS = 500_000_000  # how often the thread checks that the handler still takes ticks
_BATCH_NS = 500_000_000  # batched: how often the C handler chains to the Python handler (see _on_signal)
_ENDED_NS = 500_000_000  # an ended thread's ident found in use this long after its end is another thread's
_REFILL_NS = 100_000_000  # while the thread fills in, how often it checks that the handler still falls short
_CHECK_NS = 500_000_000  # how often the thread runs `checks` (the safety watchdog's rounds); the governor, every other
_MAX_TICKERS = 4  # threads that may take turns requesting ticks (see _loop)
_MAX_WALL_NS = 1_000_000_000  # one tick never carries more wall time than this (suspended process)
_SKIP = None
UNSAMPLED = "<cpu after the last sample>"  # issue 5: a str leaf, named as is by stacks.Symbolizer
_NO_FRAME = "<no Python frame>"  # a timer sample of a thread that was not running Python code
_timers_owner: list = []  # the one sampler whose threads have CPU timers (the C module is one per process)


class Batch(NamedTuple):
    """What the sampler collected since the previous drain."""

    tables: tuple[StackTable, ...]
    mono_start_ns: int
    mono_end_ns: int
    ticks: int
    signal_samples: int
    agent_cpu_ns: int  # sampler thread + signal handler
    process_cpu_ns: int
    period_ns: int  # time-weighted effective sampling period
    mode: str  # "signal" or "thread"
    reason: str  # why not "signal", or ""
    errors: int
    timer_samples: int = 0  # other threads' CPU samples from their CPU timers
    timer_dropped: int = 0  # of those, lost to a full buffer (their CPU goes to the thread's end)
    timers_reason: str = ""  # why other threads' CPU comes from ticks instead, or ""


def next_deadline(deadline: int, now: int, period: int) -> int:
    """The tick after `deadline`: keep the cadence when a little late, resync when more than a period behind."""
    deadline += period
    if now - deadline > period:
        return now + period
    return deadline


def signal_unavailable_reason() -> str:
    """Why the CPU-time signal cannot be used here, or "" if it can."""
    if not (hasattr(signal, "setitimer") and hasattr(signal, "SIGPROF")):
        return "no ITIMER_PROF/SIGPROF on this platform"
    if threading.current_thread() is not threading.main_thread():
        return "started outside the main thread"
    current = signal.getsignal(signal.SIGPROF)
    if current not in (signal.SIG_DFL, signal.SIG_IGN) and _stopped_sampler(current) is None:
        return "SIGPROF is owned by the application"
    if signal.getitimer(signal.ITIMER_PROF) != (0.0, 0.0):
        return "ITIMER_PROF is in use by the application"
    return ""


def _stopped_sampler(handler):
    """The stopped Sampler whose handler `handler` is: one stopped from another thread than the main one (the safety
    switch's) could not put the previous handler back, and left its own installed, inert."""
    owner = getattr(handler, "__self__", None)
    if getattr(handler, "__func__", None) is Sampler._on_signal and not owner._active:
        return owner
    return None


def timers_unavailable_reason() -> str:
    """Why other threads cannot have per-thread CPU timers here, or "" if they can."""
    if _threadcpu is None:
        return "cloudprof.agent._threadcpu is not built (it needs a C compiler at install time)"
    if _threadcpu.UNSUPPORTED:
        return _threadcpu.UNSUPPORTED
    owner = _timers_owner[0] if _timers_owner else None
    if owner is not None and owner._active and owner._pid == os.getpid():
        return "another sampler in this process has them"
    return ""


def _under_handler(frame):
    """The app's frame under the agent's signal handler, if `frame` is in it (its callees are a few deep)."""
    f = frame
    for _ in range(12):
        if f is None:
            break
        if f.f_code is _HANDLER_CODE:
            return f.f_back
        f = f.f_back
    return frame


def _add_cpu(table: StackTable, key: tuple, cpu: int, wall: int = 0) -> None:
    """CPU (and wall time) with no stack of its own (an `UNSAMPLED` leaf) into `table`."""
    acc = table.stacks.get(key)
    if acc is None:
        table.stacks[key] = [0, cpu, wall]
    else:
        acc[1] += cpu
        acc[2] += wall


class _MainTable(StackTable):
    """The main thread's signal samples, CPU in expiry-to-expiry weights until `Sampler._settle` scales them."""

    __slots__ = ("measured", "weighted")

    def __init__(self) -> None:
        super().__init__()
        self.measured = 0  # the main thread's CPU (its clock) that these samples stand for
        self.weighted = 0  # the sum of their expiry weights


class _Thread:
    __slots__ = ("clock", "last_cpu", "seen", "slot", "name", "labels", "key", "table")

    def __init__(self, clock: int | None, last_cpu: int, name: str) -> None:
        self.clock = clock
        self.last_cpu = last_cpu  # the CPU its samples carry so far (clock reading, or timer weights added)
        self.seen = last_cpu  # its clock at the previous tick
        self.slot: int | None = None  # its CPU timer (-1: it cannot have one)
        self.name = name
        self.labels = (("thread_name", name),)
        self.key: tuple | None = None  # the stack of this thread's previous sample, and the table holding it
        self.table: StackTable | None = None


class Sampler:
    """Samples this process; `start()`, `drain()` per window, `stop()`."""

    def __init__(self, *, sample_hz: float = 100.0, max_depth: int = 128, max_overhead_pct: float = 1.0,
                 use_signal: bool = True, thread_timers: bool = True, govern: bool = True,
                 clock: Clock = SYSTEM_CLOCK) -> None:
        self.max_depth = max_depth
        self.clock = clock
        self.governor = Governor(sample_hz, max_overhead_pct)
        self._want_signal = use_signal
        self._want_timers = thread_timers
        self.timers = False  # other threads' CPU from their CPU timers (see _pull_timers)
        self.timers_reason = ""
        self._timer_mark: dict | None = None  # the C module's counters when this sampler's timers started
        self._by_tid: dict[int, _Thread] = {}  # threads with a timer, by native id (idents are reused sooner)
        self._pid = os.getpid()
        self._govern = govern
        self.mode = "thread"
        self.reason = ""
        self._period_ns = int(1e9 / sample_hz)
        self._mtable = _MainTable()
        self._htable = StackTable()
        self._ttable = StackTable()
        self._xtable = StackTable()  # the CPU timers' samples, written under the tick lock
        self._in_handler = False  # also the handler's busy flag for drain()
        self._copies = False  # the C handler copies the main thread's frames at each SIGPROF (_threadcpu.hook_main)
        self._main_copy: tuple | None = None  # the copy the running handler took: ((code id, offset, ...), codes)
        self._batched = False  # the C handler chains to Python's only every _BATCH_NS (see _threadcpu.on_prof)
        self._c_handler_ns = 0  # the C handler's CPU so far, as main_skip() last told it
        self._c_tick_ns = 0  # of which its wall ticks, as _sample_main last read it
        self._looked = -1  # _thread._count() at the last look at every thread (a tick, or the batches' look)
        self._batches = 0
        self._walls = False  # the timers' handler takes the wall ticks (see _threadcpu.wall_tick, _update_walls)
        self._wall_keys: dict[int, tuple] = {}  # native id -> (its table's codes, key) of the thread's newest wall tick
        self._labelled = False  # labels or tasks were seen: the wall ticks are the Python ones (their labels)
        self._tbusy = False
        self._tick_lock = threading.Lock()
        self._threads: dict[int, _Thread | None] = {}
        self._natives: dict[int, int | None] = {}  # ident -> native id of the thread _threads[ident] describes
        self._ended_at: dict[int, int] = {}  # ident -> monotonic ns when its thread's end was folded
        self._ended = None  # exits.Ended readings of threads that have ended, while running
        self._booted: dict[int, tuple] = {}  # native id -> (thread, slot): timers threads made as they started
        self._main_ident = threading.main_thread().ident
        self.picker = ThreadPicker()  # issue 5: at most picker.max_threads stacks per tick, unbiased weights
        self._sampler_ident: int | None = None
        self._sampler_clock: int | None = None
        self._sampler_cpu = 0
        self._tick_period_ns = self._period_ns  # the thread's (at most the signal's rate, see Governor)
        self._slot = 0  # the next tick's deadline (monotonic ns), claimed under _slot_lock
        self._slot_lock = threading.Lock()
        self._late_ns = 0.0  # running average of the delay from a deadline to holding the GIL again
        self._fill = False  # the thread(s) take ticks, not just watch the handler
        self._want_tickers = 1
        self._tickers: dict[int, threading.Thread] = {}
        self._ticker_clocks: dict[int, int | None] = {}
        self._retired_cpu = 0  # CPU of extra tick requesters that have ended
        self._busy_mark = (0, 0)  # (monotonic, process CPU) at the previous slowed tick
        self._tail = 0  # process CPU from the timer's last expiry to the previous handler (see _on_signal)
        self._rearmed = False  # the timer's period changed since the previous handler
        self._armed = False  # ITIMER_PROF runs (signal mode): else the ticks carry the main thread's CPU too
        self._proc_mark = 0
        self._app_threads = 1  # threads sampled at the last tick (not the agent's)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._halt = threading.Lock()  # held while running; stop() releases it to wake the threads (see _sleep)
        self._active = False
        self._prev_handler = None
        self._main_cpu_mark = 0
        self._last_tick = 0
        self._last_handler_tick = 0
        self.checks: tuple = ()  # callables run by the sampler thread every _CHECK_NS (safety.Watchdog.step)
        # A path the thread stats as its watch ends, without the GIL (the kill-switch file), and what it found
        # for the round that follows: None when this wake-up did not look (the check looks itself).
        self.watch_path: str | None = None
        self.path_seen: bool | None = None
        # counters since start; drain() reports deltas
        self.ticks = 0
        self.signal_samples = 0
        self.handler_ns = 0
        self.handler_tick_ns = 0  # of which all-thread ticks taken in the handler (wall-time work, see _loop)
        self.handler_ticks = 0
        self.handler_runs = 0  # of the Python handler: fewer than the signals when batched
        self.timer_samples = 0
        self.errors = 0
        self._period_integral = 0
        self._period_mark = 0
        self._mark = self._counters(clock.monotonic_ns())  # drain() before start() gives an empty batch

    # --- life cycle ------------------------------------------------------------

    @property
    def hz(self) -> float:
        return 1e9 / self._period_ns

    def start(self) -> None:
        if self._active:
            return
        now = self.clock.monotonic_ns()
        self._last_tick = now
        self._period_mark = now
        exits.install()
        on_first_use(self._labels_coming)
        tasks.on_loop_start(self._labels_may_change)
        self._labelled = may_change()
        self._ended = exits.watch()
        for ident in sys._current_frames():
            self._new_thread(ident, baseline=True)
        self._note_app_threads(sum(1 for info in self._threads.values() if info is not None))
        self._looked = -1
        main = self._threads.get(self._main_ident)
        self._main_cpu_mark = main.last_cpu if main else 0
        self.reason = signal_unavailable_reason() if self._want_signal else "signal disabled by the caller"
        self._stop.clear()
        if not self._halt.locked():
            self._halt.acquire()
        self._active = True
        if not self.reason:
            try:
                self._prev_handler = signal.signal(signal.SIGPROF, self._on_signal)
                stopped = _stopped_sampler(self._prev_handler)
                if stopped is not None:
                    self._prev_handler = stopped._prev_handler
                signal.siginterrupt(signal.SIGPROF, False)  # SA_RESTART: spare C extensions' syscalls an EINTR
                self._hook_copies()
                self._main_cpu_mark = time.thread_time_ns()
                self.mode = "signal"
                self._arm()
                # Interpreter shutdown resets SIGPROF to its default (terminate) while the timer may still run.
                atexit.register(self._disarm_at_exit)
            except (OSError, ValueError, RuntimeError) as exc:
                self.reason = f"cannot install the SIGPROF handler: {exc}"
                self.mode = "thread"
        self._start_timers()
        self._mark = self._counters(now)
        self._thread = threading.Thread(target=self._run, name=f"{AGENT_THREAD_PREFIX}-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        if not self._active:
            return
        self._stop.set()
        if self._halt.locked():
            self._halt.release()
        if self.mode == "signal":
            try:
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
                time.sleep(0.002)  # let a signal already generated be delivered to our handler
                self._unhook_copies()
                self._record_main_residue()
                if signal.getsignal(signal.SIGPROF) == self._on_signal:
                    signal.signal(signal.SIGPROF, self._prev_handler or signal.SIG_DFL)
            except (OSError, ValueError):
                pass  # not the main thread: the handler stays installed but inert
        deadline = time.monotonic() + timeout
        for thread in [self._thread, *list(self._tickers.values())]:
            if thread is not None and thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self.timers:
            exits.off_boot(self._on_thread_boot)
            _threadcpu.stop()  # no timer from here on; the samples already taken are pulled below
        exits.unwatch(self._ended)
        self.forget_callbacks()
        self._catch_up(self._htable, max(0.0, deadline - time.monotonic()))
        self._booted.clear()
        if self.timers:
            _timers_owner.clear()
        self._active = False

    def forget_callbacks(self) -> None:
        """No more calls at the first labels or a loop's start (at stop, or a forked child's copy of this sampler,
        whose threads are gone: it must not fold the child's records into its tables)."""
        off_first_use(self._labels_coming)
        tasks.off_loop_start(self._labels_may_change)

    def _hook_copies(self) -> None:
        """Where the main thread was at each signal, not where the handler runs (see _threadcpu.hook_main)."""
        if _threadcpu is not None and not _threadcpu.UNSUPPORTED:
            try:
                self._copies = _threadcpu.hook_main(self.max_depth, id(_HANDLER_CODE))
                self._batched = False  # hook_main starts with every signal chained
                counters = _threadcpu.counters()
                self._c_handler_ns, self._c_tick_ns = counters["main_handler_ns"], counters["main_tick_ns"]
            except OSError:
                self._copies = False  # where_cpu_went places the samples, as without the extension

    def _unhook_copies(self) -> None:
        """Python's handler alone again: the batch not folded yet goes into the handler's table first (after
        this, nothing reads the records)."""
        if self._copies:
            if self._batched:
                self._end_batch(self._htable)
            self._set_walls(False)
            self._copies = False
            _threadcpu.unhook_main()

    def _end_batch(self, table: StackTable) -> None:
        """Every signal to Python's handler from now on: the records so far into `table`, and the main thread's
        CPU after the newest is the next sample's (or the residue's, at stop)."""
        self._fold_pending(table)
        self._main_cpu_mark = _threadcpu.counters()["main_mark"]
        self._set_batched(False)

    def _labels_coming(self) -> None:
        """The process's first labels are about to apply: the batch so far is folded with the labels of before.
        (Set in another thread, which the batches have not seen yet, or during the handler, the batch's end in
        the handler leaves its records with the thread's labels alone.) The wall ticks go back to Python's."""
        self._labelled = True
        if self._walls and self._tick_lock.acquire(False):  # else the tick holding it sees _labelled
            self._tbusy = True  # drain() waits for it
            try:
                self._take_in(self._ttable, tick_labels())  # the samples so far, with the labels of before
                self._set_walls(False)
            finally:
                self._tbusy = False
                self._tick_lock.release()
        self._labels_may_change()

    def _labels_may_change(self) -> None:
        """An event loop was set to run in this thread (each task is a `task_name`), or the first labels are about
        to apply: in the main thread, the batch ends with the labels of before."""
        if self._batched and not self._in_handler and threading.get_ident() == self._main_ident:
            self._in_handler = True  # a signal meanwhile leaves its record to the next handler
            try:
                self._end_batch(self._mtable)
            finally:
                self._in_handler = False

    def _start_timers(self) -> None:
        self.timers = False
        reason = timers_unavailable_reason() if self._want_timers else "turned off (thread_cpu_timers)"
        if not reason:
            try:
                _threadcpu.start(self.max_depth)
                exits.on_end(_threadcpu.remove_self)
                self._timer_mark = _threadcpu.counters()
                _timers_owner[:] = [self]
                self.timers = True
                exits.on_boot(self._on_thread_boot)
                # Interpreter shutdown frees the thread states of daemon threads that may still run C code.
                atexit.register(self._timers_off_at_exit)
            except Exception as exc:  # noqa: BLE001 - OSError, MemoryError: the ticks take over, never the app
                reason = f"cannot set up per-thread CPU timers: {exc}"
        self.timers_reason = reason

    def _lose_timers(self) -> None:
        """The app installed its own handler for the timers' signal: delete the timers, the ticks take over.

        Each thread's `last_cpu` already holds the CPU its timer samples carried, so its next tick carries
        the rest from there on. Until this governor step (a second at most) the app's handler also got
        the timers' signals.
        """
        with self._tick_lock:
            _threadcpu.stop()  # no sample after this (the app's handler stays in place), then pull them all
            self._set_walls(False)
            self._pull_timers(tick_labels(), self._ttable)
            self.timers = False
            self.timers_reason = "the application took the timers' signal"
            for info in self._by_tid.values():
                info.slot = -1
            self._by_tid.clear()
            exits.off_boot(self._on_thread_boot)

    def _timers_off_at_exit(self) -> None:
        if self._active and self.timers:
            _threadcpu.stop()

    def _disarm_at_exit(self) -> None:
        if self._active and self.mode == "signal":
            try:
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
            except (OSError, ValueError):
                pass
            self._unhook_copies()

    def _record_main_residue(self) -> None:
        """issue 5 fix: the main thread's CPU since its last signal, which no later signal will carry.

        At low (governed) rates that is up to a whole period, e.g. most of a short-lived worker's or a
        serverless invocation's CPU. Where it went is unknown, so it gets its own leaf rather than a guess.
        """
        main = self._threads.get(self._main_ident)
        if main is None or main.clock is None:
            return
        try:
            cpu = thread_cpu_ns(main.clock) - self._main_cpu_mark
        except OSError:
            return
        if cpu <= 0:
            return
        self._main_cpu_mark += cpu
        _add_cpu(self._htable, (main.labels, UNSAMPLED, 0), cpu)

    def hold_timer(self) -> None:
        """ITIMER_PROF off until `release_timer` (a fork child's first ARM_DELAY_S, see forking). Meanwhile the
        thread's ticks carry the main thread's CPU, as they do every other thread's: left to the first signal,
        all of it went to the one stack that signal found."""
        if self.mode == "signal":
            signal.setitimer(signal.ITIMER_PROF, 0, 0)
            self._armed = False

    def release_timer(self) -> None:
        if self._active and self.mode == "signal" and not self._armed:
            self._arm()

    def _arm(self) -> None:
        self._rearmed = self._armed = True
        seconds = self._period_ns / 1e9
        # issue 5 fix: a rate change must not restart the countdown, or a process using less CPU than one
        # period between two governor steps (a throttled, bursty worker) would never get a signal.
        remaining = signal.getitimer(signal.ITIMER_PROF)[0]
        signal.setitimer(signal.ITIMER_PROF, remaining if 0 < remaining < seconds else seconds, seconds)

    def _set_rate(self, hz: float, now: int) -> None:
        period = max(1_000_000, int(1e9 / hz))
        if abs(period - self._period_ns) * 50 < self._period_ns:
            return  # under 2%: not worth a setitimer
        self._period_integral += self._period_ns * (now - self._period_mark)
        self._period_mark = now
        self._period_ns = period
        if self.mode == "signal" and self._active and self._armed:
            try:
                self._arm()
            except (OSError, ValueError):
                self.errors += 1
        if self.timers and self._active:
            _threadcpu.set_period(period)

    # --- windows ---------------------------------------------------------------

    def drain(self) -> Batch:
        """Everything sampled since the previous drain; sampling goes on into fresh tables."""
        nested = threading.current_thread() is threading.main_thread() and self._in_handler
        if self._fill and self._active and threading.current_thread().name.startswith(AGENT_THREAD_PREFIX):
            # The threads tick (no handler does): a tick now ends the window at its end. Behind busy threads the
            # previous one may be 100 ms back, and its wall time went to the next window's first tick.
            self._thread_tick(self.clock.monotonic_ns())
        # The main thread's records not folded yet are this window's (folded now: the catch-up below lets go of
        # the codes named so far).
        if self._batched and not nested:
            self._fold_pending(self._mtable)
        xtable = self._catch_up(self._ttable, 0.0 if nested else 0.5, window_end=True)
        mtable, self._mtable = self._mtable, _MainTable()
        htable, self._htable = self._htable, StackTable()
        ttable, self._ttable = self._ttable, StackTable()
        deadline = time.monotonic() + 0.5
        while (self._tbusy or (self._in_handler and not nested)) and time.monotonic() < deadline:
            time.sleep(0.0005)
        self._settle(mtable)
        now = self.clock.monotonic_ns()
        mark, self._mark = self._mark, self._counters(now)
        cur = self._mark
        period_integral = self._period_integral + self._period_ns * (now - self._period_mark)
        span = now - mark["mono"]
        period = int((period_integral - mark["period_integral"]) / span) if span > 0 else self._period_ns
        return Batch(
            tables=(mtable, htable, ttable, xtable), mono_start_ns=mark["mono"], mono_end_ns=now,
            ticks=cur["ticks"] - mark["ticks"], signal_samples=cur["signal"] - mark["signal"],
            agent_cpu_ns=cur["agent"] - mark["agent"], process_cpu_ns=cur["process"] - mark["process"],
            period_ns=period or self._period_ns, mode=self.mode, reason=self.reason,
            errors=cur["errors"] - mark["errors"], timer_samples=cur["timer"] - mark["timer"],
            timer_dropped=cur["dropped"] - mark["dropped"],
            timers_reason=self.timers_reason,
        )

    def tables(self) -> tuple[StackTable, ...]:
        """The tables being written now (for size estimates; `drain()` is how samples are taken out)."""
        return (self._mtable, self._htable, self._ttable, self._xtable)

    def _settle(self, table: _MainTable) -> None:
        """Scale a window's main-thread samples so their CPU adds up to what the main thread's clock measured.

        The expiry-to-expiry weights set the shares. Their sum misses the CPU after the window's last
        expiry (the next window's first sample carries it), and a kernel that checks CPU timers late (a
        loaded virtual machine) shifts CPU between samples: scaling to the measured CPU keeps each window's
        total exact (a running ratio over the last samples overshot).
        """
        measured, weighted = table.measured, table.weighted
        if weighted > 0:
            factor = measured / weighted
            for acc in table.stacks.values():
                acc[1] = int(acc[1] * factor)
        elif measured > 0:  # CPU without a sample to carry it (no expiry fell in this window): say so
            _add_cpu(table, (self._main_labels(), UNSAMPLED, 0), measured)

    def _labels_now(self) -> tuple:
        """The main thread's labels at this instant, from its own context (in the signal handler)."""
        labels, more = self._main_labels(), current_extra()
        return labels + more if more else labels

    def _main_labels(self) -> tuple:
        main = self._threads.get(self._main_ident)
        return main.labels if main is not None else (("thread_name", "MainThread"),)

    def all_ticks(self) -> int:
        """Wall ticks so far: Python's (`ticks`) and the C handlers' (see _threadcpu.wall_tick)."""
        return self.ticks + self._timer_counters()["wall_ticks"]

    def _counters(self, now: int) -> dict[str, int]:
        timer = self._timer_counters()
        return {"mono": now, "ticks": self.ticks + timer["wall_ticks"], "signal": self.signal_samples,
                "agent": self.agent_cpu_ns(), "timer": self.timer_samples, "dropped": timer["dropped"],
                "process": process_cpu_ns(), "errors": self.errors,
                "period_integral": self._period_integral + self._period_ns * (now - self._period_mark)}

    def agent_cpu_ns(self) -> int:
        """CPU the agent's sampling used so far: its threads' clocks plus time inside the handler."""
        if self._sampler_clock is not None:
            try:
                self._sampler_cpu = thread_cpu_ns(self._sampler_clock)
            except OSError:
                pass  # the thread has ended: its last reading stands
        extra = self._retired_cpu
        for clock in list(self._ticker_clocks.values()):
            if clock is not None:
                try:
                    extra += thread_cpu_ns(clock)
                except OSError:
                    pass  # ending: its final reading is about to join _retired_cpu
        extra += self._timer_counters()["handler_ns"]  # the timer handler runs in the app's threads, timed by itself
        return self.handler_ns + self._sampler_cpu + extra

    def _timer_counters(self) -> dict[str, int]:
        """The C module's counters since this sampler's timers started (they stay, once lost or stopped)."""
        mark = self._timer_mark
        if mark is None:
            return {"handler_ns": 0, "dropped": 0, "wall_ticks": 0}
        now = _threadcpu.counters()
        return {key: now[key] - mark[key] for key in ("handler_ns", "dropped", "wall_ticks")}

    # --- sampling --------------------------------------------------------------

    def _catch_up(self, table: StackTable, timeout: float, window_end: bool = False) -> StackTable:
        """Timer samples and ended threads in now, outside a tick (a window's end, stop).

        At a window's end, returns the timer samples' table, swapped for a new one (an empty table if the
        tick lock could not be had: those samples go to the next window).
        """
        xtable = StackTable()
        if (self._ended or self.timers) and self._tick_lock.acquire(True, timeout):
            try:
                self._take_in(table, tick_labels())
                if window_end:
                    xtable, self._xtable = self._xtable, xtable
                    if self._timer_mark is not None:  # the window's tables hold the code objects its keys name
                        _threadcpu.forget_codes()
            finally:
                self._tick_lock.release()
        if window_end and self._copies and not self.timers:
            # Only the main thread's copies name codes now, and each comes with its code objects: no lock needed.
            _threadcpu.forget_codes()
        return xtable

    def _take_in(self, table: StackTable, extra: dict) -> None:
        """The timers' samples, then the threads that ended, into `table` (tick lock held). Ends are counted
        before the pull: a thread's samples precede its end, so none of an end's is still in the ring."""
        ending = len(self._ended) if self._ended else 0
        if self.timers:
            self._pull_timers(extra, table)
        if ending:
            self._fold_ended(table, ending)

    def _pull_timers(self, extra: dict, ticks: StackTable) -> None:
        """The CPU timers' samples since the previous pull into their table, labelled as the thread is now, and
        the handlers' wall ticks into `ticks` (the caller's tick table), folded in C (_threadcpu.drain_fold).

        Each carries the thread's CPU since its previous sample (its clock, read by the handler), which is
        added to the thread's `last_cpu`: what a thread used after its last sample is its end's to report.
        Threads are found by native id: an ident may already be another thread's. Called with the tick lock
        held, at every tick, so labels are as fresh as the ticks' (a sample's labels are those at the pull).
        """
        _threadcpu.drain_take()
        # Threads that made their timer as they started: each did before its first sample, so before any record
        # taken here (a record of a thread not adopted yet would be named by ident and not counted in its
        # `last_cpu`, and so counted again at its end).
        for native, (thread, _slot) in list(self._booted.items()):
            self._register_started(thread)
            self._booted.pop(native, None)  # not adopted (no entry for it): its samples are named by ident
        by_tid, table = self._by_tid, self._xtable
        main = self._threads.get(self._main_ident)
        main_labels = main.labels if main is not None else (("thread_name", f"Thread-{self._main_ident}"),)
        samples, used, failed = _threadcpu.drain_fold(
            table.stacks, table.codes, ticks.stacks, ticks.codes, {tid: info.labels for tid, info in by_tid.items()},
            self._main_ident, main_labels, extra, self._wall_keys, site_at, answers_version(), self.max_depth,
            _NO_FRAME)
        for tid, cpu in used.items():
            by_tid[tid].last_cpu += cpu
        self.timer_samples += samples
        self.errors += failed

    def _on_thread_boot(self, thread: threading.Thread) -> None:
        """A thread that starts makes its timer now, in the thread itself, before it runs the app's code: its
        first sample then carries its CPU from its first instruction on. (Made later, at a tick or by its
        starter after `start()` returned, both of which wait for the GIL behind busy threads, the first sample
        carried the 30-400 ms of CPU used meanwhile, at one stack.) Only the timer: the next pull or tick takes
        the thread in (`_register` adopts it), so the starting thread, and its starter waiting in `start()`, do
        no more than that. (A starter's 240 ms in `Event.wait`, once blamed on bookkeeping done here, was
        CPython's GIL hand-off behind busy threads: without the agent, up to 90 ms in 40 runs.)"""
        if not self._active or thread.name.startswith(AGENT_THREAD_PREFIX):
            return
        slot = self._add_timer(thread, 0)
        if slot >= 0:
            self._booted[thread.native_id] = (thread, slot)

    def _register_started(self, thread: threading.Thread) -> None:
        """A thread that started (tick lock held): its entry and its timer (adopted, see _on_thread_boot)."""
        ident = thread.ident
        info = self._threads.get(ident)
        if info is None or self._natives.get(ident) != thread.native_id:
            info = self._new_thread(ident, thread=thread)
        if info is not None and info.slot is None and info.clock is not None:
            self._register(ident, info, thread)

    def _register(self, ident: int, info: _Thread, thread: threading.Thread | None) -> None:
        """A CPU timer for this thread, which signals the thread itself after every period of its CPU.

        Only for threading's own threads (their end unregisters them, in exits' `Thread._delete` hook, before
        their thread state is freed), and only while the thread is alive: in the thread itself (a drain in an
        app thread), or while `threading._active` (or `_limbo`) still holds it, checked under threading's lock,
        which the ending thread takes to leave it. That lock is only tried (this may run in the signal handler,
        which may have interrupted its holder; the next tick tries again). A timer the thread made as it started
        is adopted (see _on_thread_boot). The timer's first sample weighs the thread's CPU since `last_cpu`.
        """
        if thread is None or isinstance(thread, threading._DummyThread) or not thread.native_id:  # type: ignore[attr-defined]
            info.slot = -1
            return
        booted = self._booted.pop(thread.native_id, None)
        if booted is not None:
            info.slot = booted[1]
        elif ident == threading.get_ident():
            info.slot = self._add_timer(thread, info.last_cpu)
        else:
            lock = threading._active_limbo_lock  # type: ignore[attr-defined]
            if not lock.acquire(False):
                return
            try:
                alive = threading._active.get(ident) is thread or thread in threading._limbo  # type: ignore[attr-defined]
                info.slot = self._add_timer(thread, info.last_cpu) if alive else -1
            finally:
                lock.release()
        if info.slot < 0:
            return
        self._by_tid[thread.native_id] = info
        try:
            info.seen = thread_cpu_ns(info.clock)  # for the ticks' "has it moved" test
        except OSError:
            pass

    def _add_timer(self, thread: threading.Thread, base: int) -> int:
        """The C slot of a new timer for this live thread, whose first sample weighs its CPU since `base`;
        -1 if none can be had (the timers went meanwhile, too many threads: its ticks sample it)."""
        try:
            return _threadcpu.add(thread.ident, thread.native_id, self._period_ns, base)
        except (OSError, LookupError, OverflowError, RuntimeError):
            self.errors += 1
            return -1

    def _fold_ended(self, table: StackTable, count: int) -> None:
        """The CPU of threads that ended, since their last sample (all of it if they were never sampled).

        Where it went after the last sample is unknown: it gets the `UNSAMPLED` leaf under the code the
        thread ran. Called with the tick lock held. The thread is then remembered as done, so that a tick
        which still finds its last frames does not count it again.
        """
        ended, threads, natives = self._ended, self._threads, self._natives
        active = threading._active  # type: ignore[attr-defined]
        for _ in range(count):
            e = ended.popleft()
            timed = self._by_tid.pop(e.native_id, None)  # its entry, even if the ident is another thread's now
            known = timed is not None or (e.ident in threads and natives.get(e.ident) == e.native_id)
            info = timed or (threads[e.ident] if known else None)
            if (known and info is None) or e.ident == self._main_ident or e.name.startswith(AGENT_THREAD_PREFIX):
                continue
            newer = active.get(e.ident)
            newer_holds = newer is not None and natives.get(e.ident) == newer._native_id
            if newer_holds and not known:
                continue  # a new thread already holds the ident and its entry (and this one's last reading)
            if not newer_holds:  # else the ident's entry is the newer thread's: it stays
                threads[e.ident], natives[e.ident] = _SKIP, e.native_id
                self._ended_at[e.ident] = self.clock.monotonic_ns()
            if info is not None:
                if info.clock is None:
                    continue  # its samples carried wall time as CPU: nothing to add
                cpu, labels = e.cpu_ns - info.last_cpu, info.labels
            else:
                cpu, labels = e.cpu_ns, (("thread_name", e.name),)
            if cpu <= 0:
                continue
            if e.target is None:
                _add_cpu(table, (labels, UNSAMPLED, 0), cpu)
            else:
                table.codes[id(e.target)] = e.target
                _add_cpu(table, (labels, UNSAMPLED, 0, id(e.target), -1), cpu)

    def _new_thread(self, ident: int, baseline: bool = False, thread: threading.Thread | None = None) -> _Thread | None:
        if thread is None:
            thread = threading._active.get(ident)  # type: ignore[attr-defined]
        name = thread.name if thread is not None else f"Thread-{ident}"
        native = getattr(thread, "native_id", None) if thread is not None else None
        self._natives[ident] = native
        self._ended_at.pop(ident, None)
        if name.startswith(AGENT_THREAD_PREFIX) or ident == self._sampler_ident:
            self._threads[ident] = _SKIP
            return _SKIP
        clock = thread_cpu_clock(native, ident)
        last = 0
        if baseline and clock is not None:
            # threads alive at start: count only their CPU from now on; later ones from their birth
            try:
                last = thread_cpu_ns(clock)
            except OSError:
                clock = None
        info = self._threads[ident] = _Thread(clock, last, name)
        return info

    def _tick(self, now: int, table: StackTable, main_frame, main_cpu: int,
              main_table: StackTable | None = None) -> None:
        """One stack per thread: wall since the previous tick, CPU since each thread's previous sample."""
        wall = self._claim_tick(now)
        self.ticks += 1
        self._looked = _thread._count()
        # issue 5 hooks: task_name + user labels per thread; at most max_threads stacks, weighted to stay unbiased
        extra = tick_labels()
        self._take_in(table, extra)
        timers = self.timers
        threads = self._threads
        natives = self._natives
        active = threading._active  # type: ignore[attr-defined]
        limbo = threading._limbo  # type: ignore[attr-defined]
        main = self._main_ident
        signal_mode = self.mode == "signal"
        depth = self.max_depth
        frames = sys._current_frames()
        picker = self.picker
        weights = None
        if len(frames) > picker.max_threads or picker.last:
            weights = picker.weights(list(frames), self.ticks, now, wall, main if signal_mode else None)
        for ident, frame in frames.items():
            if weights is None:
                samples, wall_i = 1, wall
            elif ident in weights:
                samples, wall_i = weights[ident]
            else:
                continue
            thread = active.get(ident)
            if thread is None and limbo:  # started, not yet in _active: its timer may be waiting (_booted)
                thread = next((t for t in list(limbo) if t._ident == ident), None)
            # Idents are reused as soon as a thread ends: a different native id is a different thread.
            if ident in threads and (thread is None or natives.get(ident) == thread._native_id):
                info = threads[ident]
                if info is None:
                    if not self._reused(ident, now):
                        continue
                    info = self._new_thread(ident)  # started outside `threading`, with an ended thread's ident
                    if info is None:
                        continue
            else:
                info = self._new_thread(ident)
                if info is None:
                    continue
            if thread is not None and thread._name is not info.name:
                info.name = thread._name
                info.labels = (("thread_name", info.name),)
            more = extra.get(ident)
            if ident == main and main_frame is not None:
                frame = main_frame
                cpu = main_cpu
                more = current_extra()
            elif ident == main and signal_mode and self._armed:
                cpu = 0  # the handler accounts the main thread's CPU
                frame = _under_handler(frame)  # a tick while the handler runs: where the app was
            elif info.clock is not None:
                if info.slot is None and thread is not None and thread._native_id in self._booted:
                    self._register(ident, info, thread)  # it made its timer as it started: that carries its CPU
                try:
                    c = thread_cpu_ns(info.clock)
                except OSError:
                    c = info.seen
                moved = c != info.seen
                info.seen = c
                if info.slot is None or info.slot < 0:
                    cpu = c - info.last_cpu
                    info.last_cpu = c
                    if ident == main and signal_mode:  # its timer held (hold_timer): the first signal's CPU starts here
                        self._main_cpu_mark = c
                        if self._copies:
                            _threadcpu.main_skip(c, False)
                    if timers and info.slot is None and (ident != main or not signal_mode):
                        self._register(ident, info, thread)  # its CPU from now on comes from its timer
                else:
                    cpu = 0  # its timer's samples carry its CPU
                labels = info.labels + more if more else info.labels
                if not moved and info.table is table and info.key[0] == labels:
                    # Not a nanosecond of CPU since its previous sample: the thread has not moved (blocked or
                    # waiting), so that stack, still in this table, takes the wall time without a new walk.
                    acc = table.stacks[info.key]
                    acc[0] += samples
                    acc[2] += wall_i
                    continue
                info.key = record(table, labels, frame, depth, samples, cpu, wall_i)
                info.table = table
                continue
            else:
                cpu = wall  # no per-thread clock on this platform: wall is the best estimate
            if ident == main and main_frame is not None:
                self._record_main(main_table if main_table is not None else table,
                                  info.labels + more if more else info.labels, frame, samples, cpu, wall_i)
            else:
                record(table, info.labels + more if more else info.labels, frame, depth, samples, cpu, wall_i)
        if len(threads) > len(frames) + 16:
            for ident in [i for i in threads if i not in frames]:
                del threads[ident]
                natives.pop(ident, None)
                self._ended_at.pop(ident, None)
        app = [threads[ident] for ident in frames if threads.get(ident) is not None]
        self._note_app_threads(len(app))
        self._update_walls(app, extra)
        # The dict holds this very frame (the sampler's own thread): a reference cycle per tick, i.e. garbage
        # that makes the app's collector run more often. Break it now.
        frames.clear()
        frame = None

    def _on_signal(self, signum, frame) -> None:
        if self._in_handler or not self._active:
            return
        self._in_handler = True
        t0 = time.thread_time_ns()
        ticked_all = False
        self.handler_runs += 1
        batch = self._batched
        try:
            if batch:
                # The thread's labels alone: batched, no others could apply, and a batch that ends because
                # labels or a loop came does not know which of its records came before them.
                self._fold_pending(self._mtable, frame=frame)
                self._count_app_threads()
                # the wall ticks the C handler took at its signals (beside other threads) are the ticks' cost
                tick_ns = _threadcpu.counters()["main_tick_ns"]
                self.handler_tick_ns += tick_ns - self._c_tick_ns
                self._c_tick_ns = tick_ns
            else:
                records = _threadcpu.main_pull() if self._copies else None
                if records and records[-1][2] is not None:
                    self._main_copy = records[-1][2:]  # the latest: the weight comes from the timer, below
                ticked_all = self._sample_main(frame, t0)
            if self._copies and self._batched != self._batchable():
                self._set_batched(not self._batched)
        except Exception:
            self.errors += 1
        finally:
            t1 = time.thread_time_ns()
            self.handler_ns += t1 - t0
            if ticked_all:
                self.handler_tick_ns += t1 - t0
            if self._copies:
                self._main_copy = None
                # The next sample's CPU leaves this handler's out: after a batch, the app's CPU from the newest
                # record to this handler (up to a check point) is the next record's; otherwise this sample had it.
                c_ns, self._main_cpu_mark = _threadcpu.main_skip(t1 - t0 if batch else t1, batch)
                self.handler_ns += c_ns - self._c_handler_ns
                self._c_handler_ns = c_ns
            else:
                self._main_cpu_mark = t1
            self._in_handler = False

    def _main_tick(self, now: int) -> int:
        """The main thread's sample at `now` is the tick (tick lock held): the wall time since the previous one."""
        self.ticks += 1
        self.handler_ticks += 1
        self._last_handler_tick = now
        return self._claim_tick(now)

    def _claim_tick(self, now: int) -> int:
        """A tick at `now`: the wall time since the previous one, Python's or the timers' handler's."""
        last = self._last_tick
        if self._copies:  # the handlers share the newest tick's time while theirs are on; the watch, always
            marked = _threadcpu.wall_mark(now)
            if self._walls:
                last = max(last, marked)
        self._last_tick = now
        wall = now - last
        return 0 if wall < 0 else wall if wall < _MAX_WALL_NS else _MAX_WALL_NS

    def _last_any_tick(self) -> int:
        """Monotonic ns of the newest tick, Python's or the timers' handler's."""
        return max(self._last_tick, _threadcpu.wall_last()) if self._walls else self._last_tick

    def _last_covered_tick(self) -> int:
        """Monotonic ns of the newest tick taken without the sampler thread (see _covered_ticks); batched, the
        newest record's, which the next batch makes a tick."""
        last = max(self._last_handler_tick, _threadcpu.wall_last()) if self._walls else self._last_handler_tick
        return max(last, _threadcpu.main_last()) if self._records_tick() else last

    def _covered_ticks(self) -> int:
        """Ticks taken without the sampler thread so far: the Python handler's and the timers' handler's; batched,
        the records not folded yet too (each is the tick of its time once folded, up to half a second later)."""
        covered = self.handler_ticks + self._timer_counters()["wall_ticks"]
        return covered + _threadcpu.main_pending() if self._records_tick() else covered

    def _update_walls(self, app: list, extra: dict) -> None:
        """At the end of a tick (tick lock held): the timers' handler takes the wall ticks while its records need
        nothing only Python knows. Every app thread but the main one has a timer (the handler walks those and the
        main thread); they are no more than max_threads, since each of its ticks walks them all (above it, Python's
        ticks pick that many, and until they catch up a thread they skipped is owed wall time: `picker.last`); and no
        labels or tasks were seen (a record is labelled when Python pulls it, up to half a second later). The
        sampler thread then looks at the threads every _CHECK_NS, which finds a thread without a timer (started
        outside `threading`) and turns them off. (The cap was 16 threads: above it, 30 waiting threads' ticks cost
        the Python handler 39-53 ms of CPU a second at 100 Hz, the C handlers 7 ms.)"""
        if extra:
            self._labelled = True
        main = self._threads.get(self._main_ident)
        picker = self.picker
        self._set_walls(
            self.timers and self._copies and not self._labelled and 1 < len(app) <= picker.max_threads
            and not picker.last and all(info is main or (info.slot is not None and info.slot >= 0) for info in app))

    def _set_walls(self, on: bool) -> None:
        if on == self._walls:
            return
        if on:
            self._wall_keys.clear()
            _threadcpu.wall_mark(self._last_tick)  # the ticks share the newest tick's time from now on
            _threadcpu.wall_mode(self._tick_period_ns)
        else:
            _threadcpu.wall_mode(0)
            self._last_tick = max(self._last_tick, _threadcpu.wall_last())  # its ticks' time is taken
        self._walls = on
        # Either way the thread ticks until it counts the handlers taking the ticks (_loop's refill test): turned
        # on, in an app whose threads all wait they take none; turned off, only the main thread's handler may
        # take them. Else the thread would find out only when the watch's quiet (4 tick periods) has passed.
        self._fill = True

    def _fold_pending(self, table: StackTable, held: bool = False, frame=None) -> None:
        """The batch's records not folded yet: in the handler (`frame`, where it runs), or outside it (a tick of the
        thread, the first labels, a window's end, stop, exit).

        Each weighs the main thread's CPU since the previous one. While the main thread is the app's only thread
        each is also the tick (the wall time since the previous tick) when one is due at its time (with other
        threads the handlers take every thread's wall ticks). That needs the tick lock, which is only tried
        unless the caller `held` it: without it, the next tick carries their wall time at its own stack (at a
        drain, the next window's first tick: 55-75 ms of a 0.6 s window's wall). They are folded in C (_threadcpu.main_fold),
        named from their leaf's code (and in the handler from a frame on its stack that runs it, see site_at); in the
        handler the newest is named here, from `frame`.
        """
        ticks = self._app_threads <= 1 and (held or self._tick_lock.acquire(False))
        try:
            labels = self._main_labels()
            half = self._period_ns >> 1
            name_site = site_at if frame is None else partial(site_at, frame=frame)
            count, weight, ticked, last, frameless, newest, failed = _threadcpu.main_fold(
                table.stacks, table.codes, labels, name_site, answers_version(), self.max_depth, frame is not None,
                half if ticks else 0, self._last_tick, self._walls)
            if ticked:
                self.ticks += ticked
                self.handler_ticks += ticked
                self._last_handler_tick = self._last_tick = last
            self.errors += failed
            for cpu, wall in frameless:  # the C walk found no frame to show
                self._fold_frameless(table, labels, frame, cpu, wall)
            if newest is not None:
                cpu, mono, copied, codes = newest
                wall = self._main_tick(mono) if ticks and mono - self._last_tick >= half else 0
                weight += cpu
                count += 1
                if copied is None:
                    self._fold_frameless(table, labels, frame, cpu, wall)
                else:
                    record_copy(table, labels, copied, codes, frame, self.max_depth, 1, cpu, wall)
            if isinstance(table, _MainTable):
                table.measured += weight
                table.weighted += weight
            self.signal_samples += count
        finally:
            if ticks and not held:
                self._tick_lock.release()

    def _fold_frameless(self, table: StackTable, labels: tuple, frame, cpu: int, wall: int) -> None:
        """A batched record whose walk found no frame: in the handler, where it runs; else an `UNSAMPLED` leaf."""
        if frame is None:
            _add_cpu(table, (labels, UNSAMPLED, 0), cpu, wall)
        else:
            record(table, labels, where_cpu_went(frame), self.max_depth, 1, cpu, wall)

    def _count_app_threads(self) -> None:
        """While batched no tick looks at the other threads: one started outside `threading` shows up here.

        `sys._current_frames()` makes a frame object for every thread's top frame; `_thread._count()` (the
        threads started through `_thread`, `threading`'s too) is read instead, and the frames every 16th batch
        (a thread that C code made, `PyGILState_Ensure`, is only in them)."""
        started = _thread._count()
        self._batches += 1
        if started == self._looked and self._batches & 15:
            return
        self._looked = started
        frames = sys._current_frames()
        threads, now = self._threads, self.clock.monotonic_ns()
        # an ident not seen yet counts, and one that an ended thread left to a thread not started by `threading`
        app = sum(1 for ident in frames if threads.get(ident, 0) is not None or self._reused(ident, now))
        frames.clear()
        self._note_app_threads(app)

    def _reused(self, ident: int, now: int) -> bool:
        """Is an ended thread's ident (idents are reused at once) held by a thread not started by `threading`
        (those are told apart by native id)? Only after _ENDED_NS: until its state goes, the ended thread's
        last frames may still show."""
        at = self._ended_at.get(ident)
        return at is not None and now - at >= _ENDED_NS

    def _note_app_threads(self, app: int) -> None:
        """The app's thread count from a look at every thread; the process-CPU mark restarts when it turns
        multi-threaded (the main thread's weights take its part of the process CPU from then on)."""
        if app > 1 and self._app_threads <= 1:
            self._proc_mark = process_cpu_ns()
        self._app_threads = app

    def _batchable(self) -> bool:
        """Batches while no labels can change, and the main thread is the app's only thread (its records are the
        ticks) or the handlers take every thread's wall ticks (an app with other threads: no record is a tick)."""
        return (self._app_threads <= 1 or self._walls) and not may_change()

    def _records_tick(self) -> bool:
        """A batch's records are the ticks of their time: the main thread is the app's only thread."""
        return self._batched and self._app_threads <= 1

    def _set_batched(self, batched: bool) -> None:
        _threadcpu.main_mode(batched, _BATCH_NS)
        self._batched = batched
        if not batched:
            self._rearmed = True  # back to the timer's weights: this once, the plain delta

    def _sample_main(self, frame, t0: int) -> bool:
        """One signal, one sample of the main thread; True if it was a tick of all threads."""
        ticked_all = False
        measured = t0 - self._main_cpu_mark
        if self._copies:
            # The C handler's CPU since this handler's previous run (its copy, and the wall ticks it took) is the
            # agent's, as the other threads' handlers' is; its ticks are the ticks' cost to the governor.
            counters = _threadcpu.counters()
            measured = max(0, measured - (counters["main_handler_ns"] - self._c_handler_ns))
            self.handler_tick_ns += counters["main_tick_ns"] - self._c_tick_ns
            self._c_tick_ns = counters["main_tick_ns"]
        mtable = self._mtable
        mtable.measured += measured
        # The weight: the CPU between the timer expiry behind the previous signal and the one behind
        # this, i.e. the delta less the CPU since this expiry (the next sample's) plus that since the
        # previous one. The timer's time left tells both; other threads' CPU also runs it down.
        left, interval = signal.getitimer(signal.ITIMER_PROF)
        tail = int((interval - left) * 1e9) if 0 < left < interval else 0
        cpu = measured + self._tail - tail
        if self._app_threads > 1:  # the main thread's part of it
            proc = process_cpu_ns()
            span, self._proc_mark = proc - self._proc_mark, proc
            if span > measured:
                cpu = int((span + self._tail - tail) * measured / span)
        if self._rearmed:  # a new period since the previous signal: this once, the plain delta
            self._rearmed = False
            cpu = measured
        self._tail = tail
        if cpu < 0:
            cpu = 0
        if frame is not None:
            mtable.weighted += cpu
            if self._main_copy is None:  # the signal came to another thread, or no C handler
                frame = where_cpu_went(frame)
            now = self.clock.monotonic_ns()
            table = self._htable
            since = now - self._last_any_tick()
            # Checked at every signal: due within half a signal period of the wall-tick period.
            all_due = since >= self._tick_period_ns - (self._period_ns >> 1)
            if (self._app_threads <= 1 and (self.ticks & 15 or not all_due) and since >= self._period_ns >> 1
                    and self._tick_lock.acquire(False)):
                # Only the main thread to sample (every 16th tick, when due, still looks for new threads):
                # its tick is this very sample, with the wall time since the previous tick.
                try:
                    self._record_main(mtable, self._labels_now(), frame, 1, cpu, self._main_tick(now))
                finally:
                    self._tick_lock.release()
            elif (all_due and (not self._walls or _thread._count() != self._looked)
                  and self._tick_lock.acquire(False)):
                # While the handlers take the wall ticks (the main thread's C handler too), only when a thread
                # came or went since the last such tick: one without a timer gives them back (_update_walls).
                # All threads, at the wall-tick rate: the governor counts this as the ticks' cost.
                try:
                    self._tick(now, table, frame, cpu, mtable)
                    self._last_handler_tick = now
                    self.handler_ticks += 1
                    ticked_all = True
                    self._wake_if_busy(now)
                finally:
                    self._tick_lock.release()
            else:
                self._record_main(mtable, self._labels_now(), frame, 1, cpu, 0)
            self.signal_samples += 1
        return ticked_all

    def _record_main(self, table: StackTable, labels: tuple, frame, samples: int, cpu: int, wall: int) -> None:
        """A main-thread sample of the signal handler: at the stack the C handler copied at the signal, if any."""
        if self._main_copy is None:
            record(table, labels, frame, self.max_depth, samples, cpu, wall)
        else:
            record_copy(table, labels, *self._main_copy, frame, self.max_depth, samples, cpu, wall)

    def _thread_tick(self, now: int) -> None:
        if not self._tick_lock.acquire(False):
            return
        self._tbusy = True
        try:
            if self._records_tick():
                # The main thread ran since its last batch and blocked or waits (else the handler would tick): its
                # records are the ticks of their time, the blocked stack's wall time starts at the newest.
                self._fold_pending(self._ttable, held=True)
            self._tick(now, self._ttable, None, 0)
        except Exception:
            self.errors += 1
        finally:
            self._tbusy = False
            self._tick_lock.release()

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._sampler_cpu = time.thread_time_ns()
            self._want_tickers = 1

    def _sleep(self, seconds: float) -> bool:
        """Wait `seconds` or until stop(); True when stopping.

        A lock held while running and released by stop(), not an Event: on this project's 2-vCPU VM a
        thread's wake-up from Event.wait costs about 125 us of CPU, from a lock's timed acquire about 80 us,
        and an idle process's wall ticks are nearly all wake-ups.
        """
        if self._halt.acquire(True, seconds):
            self._halt.release()  # pass the wake-up on to the next waiting thread
            return True
        return self._stop.is_set()

    def _claim_slot(self, now: int) -> int:
        """The next tick's deadline (now, if it has passed), handed to one requester only: they take turns."""
        with self._slot_lock:
            slot = self._slot
            self._slot = next_deadline(slot, now, self._tick_period_ns)
        return slot if slot > now else now

    def _request_tick(self, slot: int) -> bool:
        """Wait for `slot` (the wait releases the GIL; its end waits to get it back), then tick if still due.

        Returns True when stopped. The time from the slot to holding the GIL again is the hand-off delay
        that other busy threads impose; its running average decides how many requesters take turns.
        """
        clock = self.clock
        delay = slot - clock.monotonic_ns()
        if delay > 0:
            if self._sleep(delay / 1e9):
                return True
            now = clock.monotonic_ns()
            self._late_ns += (now - slot - self._late_ns) * 0.1
        elif self._stop.is_set():  # every tick running late never waits: look here too
            return True
        else:
            now = clock.monotonic_ns()
        # A handler's tick in the last period and a half says the main thread runs: leave the ticks to it. Taking
        # every other one would also keep the handler under the share that ends the filling in (see _loop).
        period = self._tick_period_ns
        last_handler = self._last_covered_tick()
        if now - self._last_any_tick() >= period >> 1 and (
                self.mode != "signal" or now - last_handler >= period + (period >> 1)):
            self._thread_tick(now)
            self._wake_if_busy(now)
        return False

    def _wake_if_busy(self, now: int) -> None:
        """Wall ticks slowed for an idle app go back to the signal's rate at the first tick that finds the app
        busy again (over 5% of a core since the previous tick), not a governor step or two later: work in
        other threads than the main one is seen by these ticks only. (Slowed for cost in a busy app, they
        stay slowed.)"""
        if self._tick_period_ns <= self._period_ns:
            return  # not slowed
        proc = process_cpu_ns()
        mono, cpu = self._busy_mark
        self._busy_mark = (now, proc)
        if proc - cpu > 0.05 * (now - mono) and self.governor.ticks_slowed_idle:
            self.governor.tick_hz = self.governor.hz
            self.governor.ticks_slowed_idle = False
            self._set_tick_period(self._period_ns, now)

    def _set_tick_period(self, period: int, now: int) -> int:
        """The thread's tick period from now on; a faster one starts now, not at the deadline already set."""
        self._tick_period_ns = period
        if self._walls:
            _threadcpu.wall_mode(period)
        with self._slot_lock:
            self._slot = min(self._slot, now + period)
        return period

    def _ticker(self, index: int) -> None:
        """An extra tick requester, alive while the hand-off delay needs more than `index` of them."""
        ident = threading.get_ident()
        self._ticker_clocks[ident] = thread_cpu_clock(threading.get_native_id(), ident)
        try:
            while self._fill and index < self._want_tickers:
                if self._request_tick(self._claim_slot(self.clock.monotonic_ns())):
                    return
        finally:
            self._ticker_clocks.pop(ident, None)
            self._retired_cpu += time.thread_time_ns()
            if self._tickers.get(index) is threading.current_thread():  # not a successor started meanwhile
                del self._tickers[index]

    def _start_tickers(self) -> None:
        for index in range(1, self._want_tickers):
            if index not in self._tickers:
                thread = self._tickers[index] = threading.Thread(
                    target=self._ticker, args=(index,), name=f"{AGENT_THREAD_PREFIX}-ticker-{index}", daemon=True)
                thread.start()

    def _handler_falls_short(self, since: int, handler_ticks: int, now: int) -> bool:
        """The handler took under 80% of the ticks due from `since` (monotonic ns, when it had taken
        `handler_ticks`) to `now`: the thread fills in."""
        return self._covered_ticks() - handler_ticks < 0.8 * (now - since) / self._tick_period_ns

    def _loop(self) -> None:
        self._sampler_ident = threading.get_ident()
        self._threads[self._sampler_ident] = _SKIP
        self._natives[self._sampler_ident] = threading.get_native_id()
        self._sampler_clock = thread_cpu_clock(threading.get_native_id(), self._sampler_ident)
        clock = self.clock
        now = clock.monotonic_ns()
        self._slot = now + self._tick_period_ns
        next_check = now + (_CHECK_NS >> 1)  # the first round soon, with a span to judge (safety.Watchdog.start)
        # The governor steps at every other round from the third on (1.25 s, then every second): one wake-up
        # (about 110 us of CPU behind a busy main thread, the GIL's hand-off) for both. (On schedules of their own
        # they drifted apart: three wake-ups a second.)
        rounds = 0
        gov_mark = (now, self.agent_cpu_ns(), process_cpu_ns(), self._covered_ticks(), self.handler_ns,
                    self.handler_tick_ns)
        # In signal mode the thread only watches while the handler alone holds the rate (a busy main
        # thread); it fills in when the handler falls short (main thread blocked, or waiting for the GIL
        # behind other busy threads), so the two together keep the tick rate.
        self._fill = self.mode != "signal"
        warming_up = True
        slot = None  # a claimed deadline after the next round, kept for later
        fill_mark = (now, self._covered_ticks())
        while True:
            now = clock.monotonic_ns()
            govern = False
            if now >= next_check:
                rounds += 1
                govern = rounds >= 3 and rounds & 1
                for check in self.checks:
                    try:
                        check()
                    except Exception:  # noqa: BLE001 - a broken check must not stop the sampling
                        self.errors += 1
                self.path_seen = None
                if self._walls and not self._fill:
                    # The handlers take the ticks: a look at the threads now and then (new ones, ended ones, the
                    # timers' samples; a busy app whose wall ticks were slowed while it idled) is left to do here.
                    tick_at = clock.monotonic_ns()
                    self._thread_tick(tick_at)
                    self._wake_if_busy(tick_at)
                next_check = now + _CHECK_NS
            if govern:
                if self.timers and not _threadcpu.signal():
                    self._lose_timers()
                own, proc = self.agent_cpu_ns(), process_cpu_ns()
                span = now - gov_mark[0]
                governor = self.governor
                governor.update(own - gov_mark[1], proc - gov_mark[2], span,
                                thread_ns=own - gov_mark[1] - (self.handler_ns - gov_mark[4])
                                + (self.handler_tick_ns - gov_mark[5]))
                if not self._govern or warming_up:  # the first second holds the agent's own start-up
                    warming_up = False
                    governor.reset()
                if self.mode == "signal":
                    # The handler ticks whenever the main thread gets CPU and the GIL, at no wake-up cost.
                    # The thread fills in when that falls short of the rate: main thread blocked or idle,
                    # or waiting for the GIL behind other busy threads.
                    self._fill = self._handler_falls_short(gov_mark[0], gov_mark[3], now)
                    fill_mark = (now, self._covered_ticks())
                self._set_rate(governor.hz if self.mode == "signal" else governor.tick_hz, now)
                period = self._set_tick_period(max(self._period_ns, int(1e9 / governor.tick_hz)), now)
                if slot is not None and slot > now + period:  # a faster rate starts now, not at the old deadline
                    slot = now + period
                # Busy threads hand the GIL round in switch intervals (5 ms), so a requester waits for
                # about one interval per busy thread: with 4 of them one requester cannot tick every
                # 10 ms. Several requesters taking turns at the slots can.
                want = 1 + int(self._late_ns // self._tick_period_ns) if self._fill and not self.timers else 1
                self._want_tickers = min(_MAX_TICKERS, want)
                if self._want_tickers > 1:
                    self._start_tickers()
                gov_mark = (now, own, proc, self._covered_ticks(), self.handler_ns, self.handler_tick_ns)
            if self._fill or not self._armed or now - self._last_covered_tick() > _WATCH_NS:
                if slot is None:
                    slot = self._claim_slot(now)
                wake = next_check
                if slot <= wake:
                    slot, due = None, slot
                    if self._request_tick(due):
                        return
                    if self.mode == "signal" and due - fill_mark[0] >= _REFILL_NS:
                        # The governor's test over the last _REFILL_NS, not the last second: once the main thread
                        # runs again its handler takes the ticks, and each wake-up here costs 100-300 us of CPU.
                        self._fill = self._handler_falls_short(*fill_mark, due)
                        fill_mark = (due, self._covered_ticks())
                    continue
            else:
                wake = min(now + _WATCH_NS, next_check)
                if self._copies:  # see _threadcpu.watch: no tick for 4 tick periods, and the thread fills in
                    idle, seen = _threadcpu.watch(self._tick_period_ns * 4, wake - now, self.watch_path)
                    self.path_seen = None if idle else seen
                    if idle:
                        self._fill = True
                        fill_mark = (clock.monotonic_ns(), self._covered_ticks())
                    if self._stop.is_set():
                        return
                    continue
            if self._sleep((wake - now) / 1e9):
                return


_HANDLER_CODE = Sampler._on_signal.__code__
