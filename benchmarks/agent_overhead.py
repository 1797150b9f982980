"""What the agent costs: whole-process CPU and wall overhead, achieved rate, per-sample cost, start-up, memory.

    .venv/bin/python benchmarks/agent_overhead.py [--pairs 13] [--units N] [--segments 6]
                                                 [--long-seconds 600] [--skip-long]

1. Process pairs: the same fixed CPU-bound service-like workload (JSON, regex,
   recursion, sorting, string work) run as a bare process and as a profiled
   process, interleaved (bare/profiled, then profiled/bare, ...), >= 13 pairs for
   each configuration: 1 thread at 100 Hz, 4 threads at 100 Hz, 1 thread with
   the governor at 0.25%. CPU is the whole process's (every thread: the app's,
   the sampler's, the signal handler's, the uploader's) over the workload with
   the agent running; `cloudprof.start()` and the final `stop(flush=True)` are
   reported apart ("start+stop"), since in a service they happen once, not per
   request. Both sides import the agent's modules (pydantic, protobuf) first.
   The null row (with `pairs`, or `--only null`) runs bare against bare the same way:
   the method's own bias and noise that day, to read the other rows against.
   `--only rates`: 1 thread at 1 Hz and 25 Hz, to split the cost that follows the
   rate (sampling) from the one that does not (the agent's presence). `--only
   single`, `mainplus3`, `governor`: one row of the pairs alone. `--only dispatch`:
   what the signal costs without the handler's work (see VARIANTS).
2. In-process ABBA: one process alternates agent-off and agent-on segments of the
   same work, so drift of the machine cancels out. `--only quiet`: the same chunk
   by chunk, counting only chunks run while the box is at its fast speed (see
   quiet_abba), with a null from the same rounds.
3. Per-sample cost at stack depth 10, 50, 100: one signal-handler sample (it also
   takes the all-thread tick) and the stack fold alone.
4. Start-up: `import cloudprof` and `cloudprof.start()`.
5. Memory: a high-cardinality run (thousands of distinct stacks) for --long-seconds,
   then the agent's traced allocations (tracemalloc, cloudprof's files only).
Medians with quartiles and a 95% confidence interval of the median (order statistics, no
assumed distribution); the box is shared and noisy, so trust medians, and run more pairs to narrow it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

WORD = re.compile(r"[a-z]+\d*")
NO_TIMERS = False  # --no-timers, passed on to the children
PIN = False  # --pin: side by side, each child on a core of its own


def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Order:
    __slots__ = ("id", "lines", "note")

    def __init__(self, i):
        self.id = i
        self.lines = [{"sku": f"sku{(i * 7 + j) % 97}", "qty": j % 5 + 1, "price": (i + j) * 0.25} for j in range(30)]
        self.note = " ".join(f"word{(i + j) % 13}" for j in range(40))

    def total(self):
        return sum(line["qty"] * line["price"] for line in self.lines)


def unit(i):
    """One request's worth of work: build, serialise, parse, match, sort, recurse, format."""
    order = Order(i)
    text = json.dumps({"id": order.id, "lines": order.lines, "note": order.note})
    doc = json.loads(text)
    words = WORD.findall(doc["note"])
    ranked = sorted(doc["lines"], key=lambda line: (line["sku"], -line["qty"]))
    fib(14)
    out = ""
    for w in words[:20]:
        out += w.upper() + ","
    return order.total() + len(ranked) + len(out)


def workload(units, threads):
    """threads <= 1: the main thread alone; N: N workers while main waits in join(); -N: main + N-1 workers."""
    if -1 <= threads <= 1:
        for i in range(units):
            unit(i)
        return
    n = abs(threads)
    per = units // n
    ts = [threading.Thread(target=lambda k=k: [unit(k * per + i) for i in range(per)], name=f"worker-{k}")
          for k in range(1 if threads < 0 else 0, n)]
    for t in ts:
        t.start()
    if threads < 0:
        for i in range(per):
            unit(i)
    for t in ts:
        t.join()


# --- child process -----------------------------------------------------------------


def process_cpu() -> float:
    """The whole process's CPU in seconds (every thread's, exited ones' too), to the microsecond.

    Not `time.process_time()`: while the agent's ITIMER_PROF is armed, Linux answers the process CPU clock from
    the timer's running total, which moves at scheduler ticks (4 ms here), so the profiled side alone would be
    read coarsely (a 2 ms burn read 0.01-2.1 ms). The agent's `clocks.process_cpu_ns` reads it the same way
    since 6577198; this copy reads it so whichever checkout's agent the script is run against."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(args) -> None:
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # before any thread starts: they all inherit it
    import cloudprof
    from cloudprof.agent import lifecycle

    store = tempfile.mkdtemp(prefix="cloudprof-bench-")
    stats = {}
    # Both sides load the same modules (pydantic, protobuf, the agent's): a bigger heap and different memory
    # layout alone move this workload's CPU by a percent or two, which is not the cost of sampling.
    import cloudprof.agent.sampler  # noqa: F401
    import cloudprof.agent.uploader  # noqa: F401
    import cloudprof.agent.window  # noqa: F401
    import cloudprof.config

    cloudprof.config.Settings  # noqa: B018 - the pydantic model is built on first use
    if args.twin_at:
        twin(args)
        return
    if args.variant:
        dispatch_variant(args.variant)
        c0 = process_cpu()
        workload(args.units, args.threads)
        burn(EXTRA * (process_cpu() - c0))
        print(json.dumps({"cpu": process_cpu() - c0}))
        signal.setitimer(signal.ITIMER_PROF, 0, 0)  # exit resets Python's handler to the default (terminate)
        return
    if args.profile:
        c = process_cpu()
        cloudprof.start(enabled=True, service="bench", storage=f"file://{store}", sample_hz=args.hz,
                        max_overhead_pct=args.budget, upload_interval_s=60, thread_cpu_timers=not args.no_timers,
                        strict=True)
        stats["start_cpu"] = process_cpu() - c
        s = lifecycle.current().sampler
        s0 = (s.all_ticks(), s.signal_samples, time.monotonic(), s.agent_cpu_ns(), s.timer_samples, process_cpu())
    # steady state: from a running agent to just before stop (start-up and the final flush are reported apart)
    c0, w0 = process_cpu(), time.perf_counter()
    workload(args.units, args.threads)
    cpu, wall = process_cpu() - c0, time.perf_counter() - w0
    if args.profile:
        s.drain()  # pulls the CPU timers' last samples
        s1 = (s.all_ticks(), s.signal_samples, time.monotonic(), s.agent_cpu_ns(), s.timer_samples, process_cpu())
        span = s1[2] - s0[2]
        app_cpu = (s1[5] - s0[5]) - (s1[3] - s0[3]) / 1e9
        stats.update({"ticks_per_s": (s1[0] - s0[0]) / span, "signals_per_s": (s1[1] - s0[1]) / span,
                      "hz": s.hz, "agent_cpu_s": (s1[3] - s0[3]) / 1e9, "mode": s.mode,
                      # CPU samples (main thread's signal + other threads' timers) per second of the app's CPU
                      "cpu_samples_per_cpu_s": ((s1[1] - s0[1]) + (s1[4] - s0[4])) / max(1e-9, app_cpu),
                      "thread_cpu": "timers" if s.timers else "ticks"})
        c = process_cpu()
        cloudprof.stop(flush=True, timeout=10)
        stats["stop_cpu"] = process_cpu() - c
    print(json.dumps({"cpu": cpu, "wall": wall, **stats}))


def twin(args) -> None:
    """One side of a `shared_core` trial: from `--twin-at` (a wall-clock time both sides are given) for
    `--seconds`, the process's CPU per work unit, counted in whole chunks of TWIN_CHUNK units; `--duty` below 1
    makes it the trial's pacer."""
    if args.variant:
        dispatch_variant(args.variant)
    end, done = args.twin_at + args.seconds, []

    def warm_up():  # the agent's first seconds (its one-off costs) and the workload's warm-up
        while time.time() < args.twin_at:
            workload(TWIN_CHUNK, 1)

    def measured():
        n = 0
        while time.time() < end:
            t, c = time.perf_counter(), time.thread_time()
            workload(TWIN_CHUNK, 1)
            burn(EXTRA * (time.thread_time() - c))
            n += TWIN_CHUNK
            if args.duty < 1:  # the pacer: a chunk, then time.sleep long enough to use only `duty` of the CPU
                time.sleep((time.perf_counter() - t) * (1 / args.duty - 1))
        done.append(n)

    if args.threads <= 1:
        warm_up()
        c0 = process_cpu()
        measured()
    else:  # --threads workers, the main thread waiting
        def worker():
            warm_up()
            measured()

        workers = [threading.Thread(target=worker, name=f"worker-{k}") for k in range(args.threads)]
        for t in workers:
            t.start()
        time.sleep(max(0.0, args.twin_at - time.time()))
        c0 = process_cpu()
        for t in workers:
            t.join()
    print(json.dumps({"cpu_per_unit": (process_cpu() - c0) / sum(done), "units": sum(done)}))
    signal.setitimer(signal.ITIMER_PROF, 0, 0)  # exit resets Python's handler to the default (terminate)


# What the signal alone costs: ITIMER_PROF at 100 Hz of CPU with (1) SIGPROF ignored, which the kernel drops
# when it would send it (what an armed process CPU timer costs); (2) only our C handler, which records the main
# thread's frames (`_threadcpu.hook_main`; nothing reads them, so once its ring is full, after 128 signals, it
# only counts them), Python's handler ignoring it; (3) that and an empty Python handler, which CPython runs at
# the next check point with a frame object; (4) our C handler recording every signal's frames as the agent's
# does, in batches its Python handler pulls (`main_pull`) twice a second and drops: the agent without its folds
# into the stack tables, its threads or its windows; (5) the agent at 1 Hz (its presence: threads, memory,
# timers); (6) the agent without per-thread CPU timers (other threads' CPU from its ticks); (7) no timer, a
# thread that wakes three times a second for 100 us of Python (the sampler thread's GIL hand-offs, no sampling);
# (8) the agent. What (8) costs above (3) is the handler's own work and the agent's threads. (9) A control of the
# measure itself: no agent, no timer, and each chunk of work followed by a spin of a known 0.5% of its CPU; a
# measure that reads it near +0.5% reads a cost of that size rightly. (10) The agent with the sampler thread
# sleeping instead of watching (`_threadcpu.watch` replaced): no timerfd, so no re-arming at the signals.
KNOWN = "0.5% more work (a control)"
VARIANTS = ("timer, signal ignored", "C handler only", "+ empty Python handler", "C handler, batches pulled",
            "agent at 1 Hz", "agent, no thread timers", "a thread waking 3 times a second", KNOWN, "agent, no watch",
            "agent")
EXTRA = 0.0  # of each chunk's CPU spun after it: 0.005 in the control (KNOWN)


def burn(seconds: float) -> None:
    """Spin on this thread's CPU clock for `seconds` of CPU (the control's known cost)."""
    if seconds > 0:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass


def dispatch_variant(variant: str) -> None:
    import cloudprof
    from cloudprof.agent import _threadcpu

    global EXTRA
    if variant == KNOWN:
        EXTRA = 0.005
        return
    if variant == "agent, no watch":  # the sampler thread sleeps instead: no timerfd, no pushes at the signals
        def watch(quiet, timeout, path=None):
            time.sleep(timeout / 1e9)
            return False, None if path is None else os.path.exists(path)

        _threadcpu.watch = watch
    if variant.startswith("agent"):
        cloudprof.start(enabled=True, service="bench", storage=f"file://{tempfile.mkdtemp()}", strict=True,
                        sample_hz=1.0 if variant == "agent at 1 Hz" else 100.0,
                        thread_cpu_timers=variant != "agent, no thread timers")
        return
    if variant == "a thread waking 3 times a second":
        def wake():
            while True:
                time.sleep(1 / 3)
                burn(100e-6)

        threading.Thread(target=wake, name="waker", daemon=True).start()
        return
    handlers = {"+ empty Python handler": lambda signum, frame: None,
                "C handler, batches pulled": lambda signum, frame: _threadcpu.main_pull()}
    signal.signal(signal.SIGPROF, handlers.get(variant, signal.SIG_IGN))
    if variant != "timer, signal ignored":
        _threadcpu.hook_main(128, 0)
    if variant == "C handler, batches pulled":
        _threadcpu.main_mode(True, 500_000_000)  # as the agent's _BATCH_NS
    signal.setitimer(signal.ITIMER_PROF, 0.01, 0.01)


def dispatch(n: int, units: int) -> None:
    """n rounds of a bare run and one run of each variant, in rotating order; medians against the round's bare."""
    runs = ("bare",) + VARIANTS
    over = {v: [] for v in VARIANTS}
    for i in range(n):
        order = runs[i % len(runs):] + runs[:i % len(runs)]
        cpu = {}
        for v in order[::-1] if i % 2 else order:
            cmd = [sys.executable, __file__, "--child", "--units", str(units)] + (["--variant", v] if v != "bare" else [])
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=dict(os.environ, PYTHONHASHSEED=str(i)))
            cpu[v] = child_result(proc)["cpu"]
        for v in VARIANTS:
            over[v].append(100 * (cpu[v] / cpu["bare"] - 1))
    for v in VARIANTS:
        q, ci = quartiles(over[v]), median_ci(over[v])
        print(f"1 thread, SIGPROF at 100 Hz, {v:<24} CPU {q[1]:+6.2f}% [{q[0]:+.2f}, {q[2]:+.2f}] "
              f"(95% CI of the median {ci[0]:+.2f}..{ci[1]:+.2f})  (n={n} rounds)", flush=True)


def start_child(profile, units, threads, hz=100.0, budget=1.0, seed=0, cpu=None):
    cmd = [sys.executable, __file__, "--child", "--units", str(units), "--threads", str(threads), "--hz", str(hz),
           "--budget", str(budget)] + (["--profile"] if profile else []) + (["--no-timers"] if NO_TIMERS else [])
    cmd += ["--cpu", str(cpu)] if cpu is not None else []
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(seed))


def child_env(seed):
    """No CLOUDPROF_* settings; the same string hashes on both sides of a pair: dict layouts (and this workload's
    speed) vary with the seed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    env["PYTHONHASHSEED"] = str(seed)
    return env


def child_result(proc):
    out, _ = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"benchmark child failed with exit code {proc.returncode}")
    return json.loads(out.strip().splitlines()[-1])


def quartiles(values):
    q = statistics.quantiles(values, n=4) if len(values) > 1 else [values[0]] * 3
    return q[0], statistics.median(values), q[2]


def interval(boots):
    """The 95% interval of bootstrap estimates (NaNs, from resamples that had nothing to compare, left out)."""
    boots = sorted(x for x in boots if x == x)
    return (boots[len(boots) // 40], boots[-1 - len(boots) // 40]) if boots else (math.nan, math.nan)


def median_ci(values, level=0.95):
    """A distribution-free confidence interval of the median: the order statistics a binomial(n, 1/2) allows."""
    xs, n = sorted(values), len(values)
    k, below = 0, 0.0  # below: P(fewer than k+1 of n values fall under the median)
    while k < n // 2:
        below += math.comb(n, k) / 2 ** n
        if below > (1 - level) / 2:
            break
        k += 1
    return (xs[k - 1], xs[n - k]) if k else (float("-inf"), float("inf"))


def null_pairs(n, units):
    """The harness against itself: pairs of two bare runs, read as the profiled rows are (the second run of even
    pairs and the first of odd ones in the profiled run's place). What its median and interval show is the
    method's own bias and noise on this box at this time, next to the rows it is run with."""
    over = []
    for i in range(n):
        a, b = (child_result(start_child(False, units, 1, seed=i)) for _ in range(2))
        over.append(100 * (b["cpu"] / a["cpu"] - 1) if i % 2 == 0 else 100 * (a["cpu"] / b["cpu"] - 1))
    q, ci = quartiles(over), median_ci(over)
    print(f"{'1 thread, bare against bare (the null)':<48} CPU {q[1]:+6.2f}% [{q[0]:+.2f}, {q[2]:+.2f}] "
          f"(95% CI of the median {ci[0]:+.2f}..{ci[1]:+.2f})  (n={n})", flush=True)


def pairs(name, n, units, threads, hz=100.0, budget=1.0, concurrent=False):
    """n bare/profiled pairs, one after the other in alternating order, or (concurrent) both at once.

    Run at once, on a 2-core box each side has a core and both meet the same neighbours, frequency and
    memory traffic at the same moment: what the box does to one it does to the other, which interleaving
    alone only evens out over many pairs."""
    cpu, wall, rates, sig, own, hzs, edges, per_cpu = [], [], [], [], [], [], [], []
    for i in range(n):
        order = (False, True) if i % 2 == 0 else (True, False)
        if concurrent:
            cpus = {p: (k + i) % 2 if PIN else None for k, p in enumerate(order)}
            procs = {p: start_child(p, units, threads, hz, budget, seed=i, cpu=cpus[p]) for p in order}
            res = {p: child_result(proc) for p, proc in procs.items()}
        else:
            res = {p: child_result(start_child(p, units, threads, hz, budget, seed=i)) for p in order}
        bare, prof = res[False], res[True]
        cpu.append(100 * (prof["cpu"] / bare["cpu"] - 1))
        wall.append(100 * (prof["wall"] / bare["wall"] - 1))
        rates.append(prof["ticks_per_s"])
        sig.append(prof["signals_per_s"])
        per_cpu.append(prof["cpu_samples_per_cpu_s"])
        own.append(100 * prof["agent_cpu_s"] / max(1e-9, prof["cpu"] - prof["agent_cpu_s"]))
        hzs.append(prof["hz"])
        edges.append((prof["start_cpu"] + prof["stop_cpu"]) * 1000)
    qc, qw, ci = quartiles(cpu), quartiles(wall), median_ci(cpu)
    name += (", side by side, pinned" if PIN else ", side by side") if concurrent else ", interleaved"
    # CPU samples: the main thread's signal and the other threads' timers (with ticks instead, each tick is one)
    per = (f"CPU samples per CPU-s {statistics.median(per_cpu):5.1f}" if prof["thread_cpu"] == "timers"
           else "other threads' CPU from the ticks")
    print(f"{name:<48} CPU {qc[1]:+6.2f}% [{qc[0]:+.2f}, {qc[2]:+.2f}] (95% CI of the median {ci[0]:+.2f}..{ci[1]:+.2f})  wall {qw[1]:+6.2f}% [{qw[0]:+.2f}, {qw[2]:+.2f}]"
          f"  ticks/s {statistics.median(rates):6.1f}  signals/s {statistics.median(sig):6.1f}  {per}"
          f"  self-timed {statistics.median(own):.2f}%  governor at {statistics.median(hzs):.0f} Hz"
          f"  start+stop {statistics.median(edges):.0f} ms CPU  (n={n}, bare CPU {bare['cpu']:.2f}s)", flush=True)


# --- in-process --------------------------------------------------------------------


def abba(units, segments, threads=1, budget=1.0, settle=0):
    """In-process groups of bare (A) and profiled (B) segments of the same work, in the order A B B A.

    Each B starts and stops its own agent. With `settle` (work units) instead, one agent runs that much unmeasured
    work first, so its governor has stepped (once a second after a warm-up second) before the two B segments are
    measured, and as much bare work comes before the second A: the order stays symmetric in time."""
    import cloudprof
    from cloudprof.agent import lifecycle

    store = tempfile.mkdtemp(prefix="cloudprof-abba-")
    hzs = []

    def start():
        cloudprof.start(enabled=True, service="bench", storage=f"file://{store}", strict=True,
                        max_overhead_pct=budget, thread_cpu_timers=not NO_TIMERS)

    def measure():
        c0 = process_cpu()
        workload(units, threads)
        return process_cpu() - c0

    def segment(on):
        if on:
            start()
        c = measure()
        if on:
            cloudprof.stop(flush=False, timeout=5)
        return c

    workload(units // 4, threads)  # warm up
    ratios = []
    for _ in range(segments):
        if settle:
            a1 = measure()
            start()
            workload(settle, threads)
            b1, b2 = measure(), measure()
            governor = lifecycle.current().sampler.governor
            hzs.append((governor.hz, governor.tick_hz))
            cloudprof.stop(flush=False, timeout=5)
            workload(settle, threads)
            a2 = measure()
        else:
            a1, b1, b2, a2 = segment(False), segment(True), segment(True), segment(False)
        ratios.append(100 * ((b1 + b2) / (a1 + a2) - 1))
    q, ci = quartiles(ratios), median_ci(ratios)
    name = f"in-process ABBA, {threads} thread(s)" + (f", budget {budget:g}%" if budget != 1.0 else "")
    name += f", settled {settle} units" if settle else ""
    rate = (f"  governor at {statistics.median(h for h, _ in hzs):.0f} Hz, ticks at "
            f"{statistics.median(t for _, t in hzs):.0f} Hz" if hzs else "")
    print(f"{name:<37} CPU {q[1]:+6.2f}% [{q[0]:+.2f}, {q[2]:+.2f}] "
          f"(95% CI of the median {ci[0]:+.2f}..{ci[1]:+.2f}){rate}  (n={segments} ABBA groups of {units} units)",
          flush=True)


def quiet_abba(rounds, segment=8, chunk=250, settle=5000, fast=1.25):
    """In process, chunk by chunk, counting only the chunks run while the box is at its fast speed.

    This VM's speed jumps between two levels for seconds at a time (the same work takes 1.5-2x the CPU in the
    slow one), so whole runs and segments compare mostly the spells they met. Here each chunk of `chunk` units
    (about 50 ms) is timed on the whole process's CPU, and a fixed probe (0.7 ms of a Python loop, on the main
    thread's clock) runs before every chunk and after the last: a chunk counts when the probes either side of
    it ran within `fast` x the run's 5th percentile probe. The probes, not the chunk's own time, decide, so
    the agent's cost inside a chunk cannot keep it out. Rounds: A chunks bare, start the agent and run
    `settle` units unmeasured (past its first second's one-off costs), 2 x `segment` B chunks, stop, `settle`
    units, A chunks; every other round runs its B bare too, the null. Pooled mean CPU per kept chunk, B
    against A, with a 95% interval from resampling whole rounds."""
    import random

    import cloudprof

    store = tempfile.mkdtemp(prefix="cloudprof-quiet-")

    def probe():
        t, x = time.thread_time(), 0
        for i in range(20000):
            x += i
        return time.thread_time() - t

    def chunks(k):
        out = []
        for _ in range(k):
            p, c = probe(), process_cpu()
            workload(chunk, 1)
            out.append((p, process_cpu() - c))
        return out + [(probe(), None)]

    workload(settle, 1)  # warm up
    runs = []
    for i in range(rounds):
        on = i % 2 == 0
        a1 = chunks(segment)
        if on:
            cloudprof.start(enabled=True, service="bench", storage=f"file://{store}", strict=True,
                            thread_cpu_timers=not NO_TIMERS)
        workload(settle, 1)
        b = chunks(2 * segment)
        if on:
            cloudprof.stop(flush=False, timeout=5)
        workload(settle, 1)
        runs.append((on, (a1, chunks(segment)), (b,)))
    limit = fast * statistics.quantiles([p for _, a, b in runs for seg in a + b for p, _ in seg], n=20)[0]

    def kept(segments):
        return [seg[k][1] for seg in segments for k in range(len(seg) - 1) if max(seg[k][0], seg[k + 1][0]) <= limit]

    def over(group):
        a, b = [c for _, s, _ in group for c in kept(s)], [c for _, _, s in group for c in kept(s)]
        return 100 * (statistics.mean(b) / statistics.mean(a) - 1) if a and b else float("nan"), len(a), len(b)

    rng = random.Random(0)
    groups = {on: [r for r in runs if r[0] == on] for on in (True, False)}
    resampled = {on: [over([rng.choice(g) for _ in g])[0] for _ in range(400)] for on, g in groups.items()}
    estimates = {on: over(g) for on, g in groups.items()}
    for on, name in ((True, "1 thread, 100 Hz"), (False, "bare against bare (the null)")):
        est, na, nb = estimates[on]
        low, high = interval(resampled[on])
        print(f"{'in process, fast spells, ' + name:<56} CPU {est:+6.2f}% (95% interval {low:+.2f}..{high:+.2f})  "
              f"chunks kept A {na} / B {nb} of {len(groups[on]) * 2 * segment} each  (n={len(groups[on])} rounds)",
              flush=True)
    # B against A has a bias of its own (the null's rows): the agent's cost is its row less the null's
    low, high = interval([x - y for x, y in zip(resampled[True], resampled[False])])
    print(f"{'in process, fast spells, the agent less the null':<56} CPU "
          f"{estimates[True][0] - estimates[False][0]:+6.2f} points (95% interval {low:+.2f}..{high:+.2f})",
          flush=True)


TWIN_CHUNK = 25  # work units between two looks at the clock in a twin (about 5 ms)
PACER_DUTY = 0.25  # of the CPU the pacer uses


def shared_core(trials, seconds=10.0, settle=4.0, variants=("agent",), threads=1):
    """Each trial pins two processes to the same CPU at the same time: the measured one runs the workload
    without a break, a bare pacer runs it in chunks of about 5 ms with sleeps between, using a quarter of the
    CPU. Whatever speed the CPU has (this VM's runs at one of two speeds for seconds at a time, each CPU on its
    own) it has for both, so the measured side's CPU per unit over the pacer's cancels it. The trials cycle
    through a bare measured side (the null) and `variants` (see VARIANTS), the two CPUs each running a trial at
    once; each row is how far its trials' CPU per unit against the pacer's lies above the null's (a
    Hodges-Lehmann shift, robust to the box's rare slow trials), with a 95% interval from resampling trials.
    Both sides run from `settle` seconds after launch (past the agent's first second) for `seconds`.

    Why a pacer, not two full sides: the scheduler would then take the CPU from the profiled side for 10-30 ms
    at a time, and its sampler thread fills in the wall ticks the handler missed, which a process with a CPU
    to itself does not do (its self-timed share read 0.82% that way, 0.19% next to a pacer). The measured side
    gets about 80% of the CPU: its agent's wall-clock costs (the sampler thread's two rounds a second) weigh a
    quarter more than they would in a process of its own, an upper bound by that much.

    `threads` > 1: the measured side runs the workload in that many worker threads (the main thread waits in
    join), all on the one CPU, taking turns at the GIL as they would on a bigger one; the pacer runs one."""
    import random

    def side(variant, cpu, at, seed, duty=1.0):
        cmd = [sys.executable, __file__, "--child", "--cpu", str(cpu), "--twin-at", repr(at), "--seconds",
               str(seconds), "--duty", str(duty), "--threads", str(threads if duty == 1.0 else 1)]
        cmd += ["--variant", variant] if variant else []
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=child_env(seed))

    kinds = (None,) + tuple(variants)  # None: the null
    if trials < 2 * len(kinds):
        raise SystemExit(f"--only shared: --trials {trials} is too few for {len(kinds)} kinds (two each at least)")
    ratios = {kind: [] for kind in kinds}  # measured side's CPU per unit / the pacer's, per trial
    cpus = sorted(os.sched_getaffinity(0))[:2]
    for batch in range(0, trials, len(cpus)):
        at = time.time() + settle
        running = []
        for i, cpu in zip(range(batch, trials), cpus):
            kind = kinds[(i + i // len(kinds)) % len(kinds)]  # each kind once a cycle, on every CPU in turn
            launch = [("measured", kind, 1.0), ("pacer", None, PACER_DUTY)]  # the order of launch alternates
            procs = {role: side(variant, cpu, at, i, duty) for role, variant, duty in launch[::1 if i % 2 else -1]}
            running.append((kind, procs))
        for kind, procs in running:
            res = {role: child_result(proc)["cpu_per_unit"] for role, proc in procs.items()}
            ratios[kind].append(res["measured"] / res["pacer"])
    # A trial's percent against the null's median. The estimate is the Hodges-Lehmann shift (the median of every
    # difference between a trial of the row and one of the null), not a difference of means: now and then the box
    # slows one trial by 8-27% (seen in the null's trials and the agent's alike), which moved a mean by a point.
    null = statistics.median(ratios[None])
    pct = {kind: [100 * (x / null - 1) for x in xs] for kind, xs in ratios.items()}
    rng = random.Random(0)
    what = "one CPU shared with a pacer, " + (f"{threads} threads, " if threads > 1 else "")
    low_q, high_q = (statistics.quantiles(pct[None], n=4)[i] for i in (0, 2))
    print(f"{what + 'the null':<48} bare CPU per unit {100 * (null - 1):+.2f}% against the pacer's (quartiles of "
          f"its trials {low_q:+.2f}, {high_q:+.2f} points; n={len(pct[None])} trials of {seconds:g} s)", flush=True)
    for kind in kinds[1:]:
        xs, ys = pct[kind], pct[None]
        low, high = interval([shift(rng.choices(xs, k=len(xs)), rng.choices(ys, k=len(ys))) for _ in range(1000)])
        print(f"{what + kind:<48} CPU {shift(xs, ys):+6.2f}% (95% interval {low:+.2f}..{high:+.2f})  "
              f"(n={len(xs)} trials of {seconds:g} s)", flush=True)
    print(json.dumps({kind or "null": [round(x, 2) for x in xs] for kind, xs in pct.items()}))  # every trial, as run


def shift(xs, ys):
    """The Hodges-Lehmann estimate of how far xs lie above ys: the median of all differences x - y."""
    return statistics.median(x - y for x in xs for y in ys)


def deep(n, fn):
    if n <= 1:
        return fn()
    return deep(n - 1, fn)


def per_sample_cost():
    """Per main-thread sample at stack depth 10 / 50 / 100: the stack fold alone (direct calls, hot cache); the
    Python handler called directly with every signal going to it (its mode with several app threads or with
    labels); and in real signals at 100 Hz, batched (one app thread, no labels), by the handlers' own clocks."""
    import signal as sig

    from cloudprof.agent import labels
    from cloudprof.agent.sampler import Sampler, _threadcpu
    from cloudprof.agent.stacks import StackTable, record

    for depth in (10, 50, 100):
        def measure():
            frame = sys._getframe()
            table, names, n = StackTable(), (("thread_name", "MainThread"),), 20000
            t0 = time.thread_time_ns()
            for _ in range(n):
                record(table, names, frame, 128, 1, 1, 1)
            fold = (time.thread_time_ns() - t0) / n / 1000
            used = labels._state["used"]
            labels._state["used"] = True  # every signal to the Python handler
            s = Sampler(sample_hz=1, max_overhead_pct=100)  # 1 Hz: the timer stays out of the measurement
            s.start()
            try:
                handler_start = s.handler_ns
                for _ in range(n // 10):
                    s._last_tick = 0  # make every call take the all-thread tick too
                    s._on_signal(sig.SIGPROF, frame)
                handler = (s.handler_ns - handler_start) / (n // 10) / 1000
            finally:
                s.stop()
                labels._state["used"] = used
            batched = c_part = runs = None
            if _threadcpu is not None and not _threadcpu.UNSUPPORTED:
                s = Sampler(sample_hz=100, max_overhead_pct=100)
                s.start()
                try:
                    time.sleep(0.05)
                    h0, c0, n0, r0 = s.handler_ns, _threadcpu.counters()["main_handler_ns"], s.signal_samples, s.handler_runs
                    t0 = time.thread_time()
                    while time.thread_time() - t0 < 3:
                        fib(15)
                    s.drain()
                    samples = s.signal_samples - n0
                    batched = (s.handler_ns - h0) / samples / 1000
                    c_part = (_threadcpu.counters()["main_handler_ns"] - c0) / samples / 1000
                    runs = (s.handler_runs - r0) / samples
                finally:
                    s.stop()
            return fold, handler, batched, c_part, runs, batch_folds()
        fold, handler, batched, c_part, runs, folds = deep(depth, measure)
        line = (f"per-sample cost at depth {depth:>3}: stack fold alone {fold:5.1f} us; Python handler + tick, every "
                f"signal, called directly {handler:5.1f} us")
        if batched is not None:
            line += (f"; real signals, batched {batched:5.1f} us (C handler {c_part:4.1f} us, "
                     f"{runs:.2f} Python handler runs per sample)")
        if folds is not None:
            line += "; a batched record's fold, C against Python: " + ", ".join(
                f"{kind} {c:4.1f} / {py:4.1f} us" for kind, (c, py) in folds.items())
        print(line, flush=True)


def batch_folds(reps=31):
    """Median cost of folding one batched record (a signal's copy of the main thread's stack here) in C
    (`_threadcpu.main_fold`) and in Python (`record_copy`, as before), side by side: 100 records of one stack
    into a table that holds it ("stored") and 100 of distinct stacks into an empty one ("new")."""
    from cloudprof.agent.native import answers_version, site_at
    from cloudprof.agent.sampler import _threadcpu
    from cloudprof.agent.stacks import StackTable, record_copy

    if _threadcpu is None or _threadcpu.UNSUPPORTED:
        return None

    def handler(signum, frame):
        pass

    def raise_at(extra):
        return deep(extra, lambda: signal.raise_signal(signal.SIGPROF))

    previous = signal.signal(signal.SIGPROF, handler)
    _threadcpu.hook_main(128, id(handler.__code__))
    out = {}
    try:
        for kind in ("stored", "new"):
            times = {"c": [], "py": []}
            for _ in range(reps):
                for way in ("c", "py"):
                    table = StackTable()
                    if kind == "stored":  # the stack is in the table already
                        _threadcpu.main_pull()
                        raise_at(1)
                        for _w, _m, copied, codes in _threadcpu.main_pull():
                            record_copy(table, (), copied, codes, None, 128, 1, 0, 0)
                    _threadcpu.main_pull()
                    for i in range(100):
                        raise_at(1 if kind == "stored" else 1 + i % 50)
                    t0 = time.thread_time_ns()
                    if way == "c":
                        _threadcpu.main_fold(table.stacks, table.codes, (), site_at, answers_version(), 128, False,
                                             0, 0, False)
                    else:
                        for _w, _m, copied, codes in _threadcpu.main_pull():
                            record_copy(table, (), copied, codes, None, 128, 1, 0, 0)
                    times[way].append((time.thread_time_ns() - t0) / 100 / 1000)
            out[kind] = tuple(statistics.median(times[way]) for way in ("c", "py"))
    finally:
        _threadcpu.unhook_main()
        signal.signal(signal.SIGPROF, previous)
    return out


def startup_cost():
    code = ("import resource, time; process_cpu = lambda: sum(resource.getrusage(resource.RUSAGE_SELF)[:2]); "
            "t0 = time.perf_counter(); c0 = process_cpu(); import cloudprof; "
            "t1 = time.perf_counter(); c1 = process_cpu(); cloudprof.start(service='bench'); "
            "t2 = time.perf_counter(); c2 = process_cpu(); import tempfile; d = tempfile.mkdtemp(); "
            "t3 = time.perf_counter(); c3 = process_cpu(); "
            "cloudprof.start(enabled=True, service='bench', storage='file://' + d, strict=True); "
            "t4 = time.perf_counter(); c4 = process_cpu(); cloudprof.stop(flush=False); "
            "print(t1 - t0, c1 - c0, t2 - t1, c2 - c1, t4 - t3, c4 - c3)")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    rows = [list(map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True, env=env).stdout.split())) for _ in range(5)]
    med = [statistics.median(r[i] for r in rows) * 1000 for i in range(6)]
    print(f"start-up: import cloudprof {med[0]:.1f} ms wall / {med[1]:.1f} ms CPU; cloudprof.start() with the "
          f"toggle off {med[2]:.1f} / {med[3]:.1f} ms; on {med[4]:.1f} ms wall / {med[5]:.1f} ms CPU (median of 5)",
          flush=True)


def idle_then_burst(idle_s=8.0):
    """An idle service (10 threads blocked, main asleep) under the governor, then a 0.3 s burst of CPU."""
    import cloudprof
    from cloudprof.agent import lifecycle

    release = threading.Event()
    pool = [threading.Thread(target=release.wait, name=f"pool-{i}") for i in range(10)]
    for t in pool:
        t.start()
    cloudprof.start(enabled=True, service="bench", storage=f"file://{tempfile.mkdtemp()}", strict=True)
    sampler = lifecycle.current().sampler
    time.sleep(idle_s - 3)
    t0, a0, k0, p0 = time.monotonic(), sampler.agent_cpu_ns(), sampler.all_ticks(), process_cpu()
    time.sleep(3)
    span = time.monotonic() - t0
    own, ticks = (sampler.agent_cpu_ns() - a0) / span / 1e6, (sampler.all_ticks() - k0) / span
    whole = (process_cpu() - p0) / span * 1e3  # the app does nothing: all of it is the agent's threads
    n0, c0 = sampler.signal_samples, time.thread_time()
    while time.thread_time() - c0 < 0.3:
        sum(i * i for i in range(300))
    burst = sampler.signal_samples - n0
    cloudprof.stop(flush=False)
    release.set()
    print(f"idle, 10 blocked threads, after {idle_s:.0f} s: agent CPU {own:.2f} ms/s ({own / 10:.3f}% of a core; "
          f"whole process {whole:.2f} ms/s), "
          f"{ticks:.1f} wall ticks/s, signal still armed at {sampler.hz:.0f} Hz; then a 0.3 s CPU burst: "
          f"{burst} signal samples (100 Hz would be 30)", flush=True)


# --- memory ------------------------------------------------------------------------


def memory(seconds):
    code = """
import random, resource, sys, tempfile, time
sys.setrecursionlimit(10000)
import cloudprof
import cloudprof.agent.sampler, cloudprof.agent.uploader, cloudprof.agent.window, cloudprof.config  # both sides
cloudprof.config.Settings  # the pydantic model is built on first use
from cloudprof.agent import lifecycle
names = [f"f{i}" for i in range(300)]
ns = {}
for name in names:
    exec(f"def {name}(path, k):\\n    if k == len(path):\\n        return sum(j * j for j in range(200))\\n"
         f"    return globals()[path[k]](path, k + 1)\\n", ns)
rnd = random.Random(7)
profile = sys.argv[1] == "on"
sampler = None
if profile:
    cloudprof.start(enabled=True, service="bench", storage="file://" + tempfile.mkdtemp(), upload_interval_s=60,
                    strict=True)
    sampler = lifecycle.current().sampler
end = time.monotonic() + float(sys.argv[2])
peak = table_bytes = now = 0
while time.monotonic() < end:
    path = [rnd.choice(names) for _ in range(rnd.randint(3, 40))]
    ns[path[0]](path, 1)
    if sampler is not None:
        peak = max(peak, sum(len(t) for t in sampler.tables()))
if sampler is not None:  # measured once, at the end: measuring at each new peak would itself raise the max RSS
    tables = sampler.tables()
    now = sum(len(t) for t in tables)
    items = [kv for t in tables for kv in list(t.stacks.items())]
    parts = {id(x): x for k, _ in items for x in k}  # code ids, offsets, labels: each object once
    table_bytes = (sum(sys.getsizeof(t.stacks) + sys.getsizeof(t.codes) for t in tables)
                   + sum(sys.getsizeof(k) + sys.getsizeof(v) for k, v in items)
                   + sum(sys.getsizeof(x) for x in parts.values()))
running = bool(lifecycle.current())
rate = sampler.signal_samples / float(sys.argv[2]) if sampler else 0
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, peak, now, table_bytes, running, rate,
      sampler.hz if sampler else 0)
cloudprof.stop(flush=False)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    # both at once (one core each): the same 10 minutes of the box for both sides, in half the time
    procs = {mode: subprocess.Popen([sys.executable, "-c", code, mode, str(seconds)], stdout=subprocess.PIPE,
                                    text=True, env=env) for mode in ("off", "on")}
    rows = {}
    for mode, proc in procs.items():
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"memory run ({mode}) failed with exit code {proc.returncode}")
        rows[mode] = out.split()
    rss_off, rss_on = int(rows["off"][0]), int(rows["on"][0])
    _, peak, now, table_bytes, running, rate, hz = rows["on"]
    print(f"memory after a {seconds:.0f} s high-cardinality run (300 functions, random call paths of depth 3-40): "
          f"max RSS {rss_on / 1024:.1f} MiB profiled vs {rss_off / 1024:.1f} MiB bare "
          f"(+{(rss_on - rss_off) / 1024:.1f} MiB, both with the agent's modules imported); largest window {peak} unique stacks; "
          f"at the end {now} in {int(table_bytes) / 2**20:.2f} MiB of stack tables (each key, count and int once); "
          f"{float(rate):.0f} signal samples/s, governor at "
          f"{float(hz):.0f} Hz at the end; agent still running: {running}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=1,
                    help="--only shared: worker threads on the measured side (children: see workload())")
    ap.add_argument("--hz", type=float, default=100.0, help=argparse.SUPPRESS)
    ap.add_argument("--budget", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--units", type=int, default=20000, help="work units per run (about 0.1 ms of CPU each)")
    ap.add_argument("--pairs", type=int, default=13)
    ap.add_argument("--pairing", choices=["both", "concurrent", "sequential"], default="both",
                    help="run each pair's two processes at once, one after the other, or both ways")
    ap.add_argument("--pin", action="store_true",
                    help="side by side, pin each child (all its threads) to a CPU of its own, alternating per pair")
    ap.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--variant", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--segments", type=int, default=6, help="ABBA groups in process")
    ap.add_argument("--trials", type=int, default=40, help="trials of --only shared, the null's among them")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds of each --only shared trial")
    ap.add_argument("--parts", nargs="*", choices=VARIANTS,
                    help="--only shared: also these parts of the cost (see VARIANTS; none named: all)")
    ap.add_argument("--twin-at", type=float, help=argparse.SUPPRESS)
    ap.add_argument("--duty", type=float, default=1.0, help=argparse.SUPPRESS)
    ap.add_argument("--long-seconds", type=float, default=600.0, help="length of the memory run (issue: 600)")
    ap.add_argument("--skip-long", action="store_true")
    ap.add_argument("--no-timers", action="store_true",
                    help="other threads' CPU from the ticks, not per-thread CPU timers (thread_cpu_timers=false)")
    ap.add_argument("--only", choices=["pairs", "null", "abba", "cost", "startup", "idle", "memory", "governor",
                                       "mainplus3", "rates", "single", "dispatch", "quiet", "shared"],
                    action="append")
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0
    global NO_TIMERS, PIN
    NO_TIMERS, PIN = args.no_timers, args.pin
    only = set(args.only or ["pairs", "abba", "cost", "startup", "idle", "memory"])
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, "
          f"units={args.units}", flush=True)
    ways = {"both": (True, False), "concurrent": (True,), "sequential": (False,)}[args.pairing]
    for concurrent in ways:
        if ("pairs" in only or "null" in only) and not concurrent:
            null_pairs(args.pairs, args.units)
        if "pairs" in only or "single" in only:
            pairs("1 thread, 100 Hz, budget 1%", args.pairs, args.units, 1, concurrent=concurrent)
        if "pairs" in only:
            pairs("4 threads, 100 Hz, budget 1%", args.pairs, args.units, 4, concurrent=concurrent)
        if "pairs" in only or "mainplus3" in only:
            pairs("main + 3 threads, 100 Hz, budget 1%", args.pairs, args.units, -4, concurrent=concurrent)
        if "rates" in only:
            # What lowering the rate buys: a cost that follows the rate is the sampling's; one that stays at 1 Hz is
            # the agent's presence (its threads, its memory moving the app's), which no governor can lower.
            for hz in (1.0, 25.0):
                pairs(f"1 thread, {hz:.0f} Hz", args.pairs, args.units, 1, hz=hz, concurrent=concurrent)
        if "pairs" in only or "governor" in only:
            # the governor steps once a second after a first warm-up second: give it a run long enough to act
            pairs("1 thread, governor at 0.25%", args.pairs, args.units * 5, 1, budget=0.25, concurrent=concurrent)
    if "dispatch" in only:
        dispatch(args.pairs, args.units)
    if "abba" in only:
        abba(args.units // 2, args.segments, 1)
        abba(args.units // 2, args.segments, 4)
    if "governor" in only:
        # the governor steps once a second after a warm-up second: let it settle (3 s) before measuring
        for threads in (1, 4):
            for budget in (1.0, 0.25):
                abba(args.units // 2, args.segments, threads, budget=budget, settle=args.units * 3 // 2)
    if "quiet" in only:
        quiet_abba(args.segments)
    if "shared" in only:
        parts = VARIANTS if args.parts == [] else tuple(args.parts or ()) + ("agent",)
        shared_core(args.trials, args.seconds, variants=tuple(dict.fromkeys(parts)), threads=args.threads)
    if "cost" in only:
        per_sample_cost()
    if "startup" in only:
        startup_cost()
    if "idle" in only:
        idle_then_burst()
    if "memory" in only and not args.skip_long:
        memory(args.long_seconds)
    print(f"load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
