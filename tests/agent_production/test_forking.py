"""os.fork(): each child profiles itself under its own pid; fork+exec children are never hit by our timer."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from tests.agent_production import helpers

SCRIPT = textwrap.dedent('''
    import os, sys, time
    import cloudprof

    cloudprof.start(strict=True)

    def burn(seconds):
        start = time.thread_time()
        while time.thread_time() - start < seconds:
            sum(range(300))

    def parent_work():
        burn(0.3)

    def child_work():
        burn(0.3)

    parent_work()
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            from cloudprof.agent import labels, tasks
            # the child's sampler's callbacks alone: the parent's copy would fold the child's records into its tables
            callbacks = (len(tasks._LOOP_START), len(labels._FIRST_USE))
            child_work()
            cloudprof.stop()
            os._exit(0 if callbacks == (1, 1) else 3)
        children.append(pid)
    # fork + exec of a CPU-busy program: an inherited ITIMER_PROF would kill it with SIGPROF.
    pid = os.fork()
    if pid == 0:
        os.execv("/bin/sh", ["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo exec-ok"])
    children.append(pid)
    # os.spawnv is fork + exec in Python (so our fork hook runs in its child too).
    status = os.spawnv(os.P_WAIT, "/bin/sh", ["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done"])
    assert status == 0, status
    codes = [os.waitpid(pid, 0)[1] for pid in children]
    print("children", " ".join(map(str, children)), "codes", " ".join(map(str, codes)), flush=True)
    cloudprof.stop()
''')


def run_profiled(tmp_path, service: str, script: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `script` as tmp_path/<service>.py (in tmp_path) with profiling on into tmp_path/store."""
    (tmp_path / f"{service}.py").write_text(script)
    env = dict(os.environ, CLOUDPROF_ENABLED="1", CLOUDPROF_SERVICE=service,
               CLOUDPROF_STORAGE=f"file://{tmp_path / 'store'}", CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"))
    return subprocess.run([sys.executable, str(tmp_path / f"{service}.py")], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=tmp_path)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_children_profile_themselves_and_exec_is_safe(tmp_path):
    store = tmp_path / "store"
    proc = run_profiled(tmp_path, "forker", SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert "exec-ok" in proc.stdout, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("children"))
    words = line.split()
    children = [int(w) for w in words[1:words.index("codes")]]
    assert all(int(c) == 0 for c in words[words.index("codes") + 1:]), line

    by_pid: dict[int, list] = {}
    for key, profile in helpers.raw_profiles(store):
        by_pid.setdefault(key.pid, []).append(profile)
    parent = proc_pid = next(pid for pid in by_pid if pid not in children)
    assert set(children[:2]) <= set(by_pid)
    assert children[2] not in by_pid  # it exec'd a shell before any window was due
    parent_cpu = sum(helpers.total(p, 1, function="parent_work") for p in by_pid[proc_pid])
    assert parent_cpu > 0.2e9
    for pid in children[:2]:
        profiles = by_pid[pid]
        assert sum(helpers.total(p, 0, function="parent_work") for p in profiles) == 0, "parent samples in a child"
        cpu = sum(helpers.total(p, 1, function="child_work") + helpers.total(p, 1, leaf="<cpu after the last sample>")
                  for p in profiles)
        assert 0.2e9 <= cpu <= 0.4e9, cpu
        assert all(helpers.comments(p)["pid"] == str(pid) for p in profiles)
    assert sum(helpers.total(p, 0, function="child_work") for p in by_pid[parent]) == 0


POOL_SCRIPT = textwrap.dedent('''
    import multiprocessing, os, time
    import cloudprof

    cloudprof.start(strict=True)

    def task(n):
        start = time.thread_time()
        while time.thread_time() - start < 0.1:
            sum(range(300))
        return os.getpid()

    if __name__ == "__main__":
        with multiprocessing.get_context("fork").Pool(2) as pool:
            pids = set(pool.map(task, range(8), chunksize=1))
            pool.close()
            pool.join()
        print("workers", " ".join(map(str, sorted(pids))), flush=True)
        cloudprof.stop()
''')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_multiprocessing_fork_pool_workers_flush_before_os_exit(tmp_path):
    """Pool workers leave through os._exit (no atexit): their last window is flushed by a multiprocessing finalizer."""
    store = tmp_path / "store"
    proc = run_profiled(tmp_path, "pool", POOL_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    workers = {int(w) for w in next(l for l in proc.stdout.splitlines() if l.startswith("workers")).split()[1:]}
    by_pid: dict[int, int] = {}
    for key, profile in helpers.raw_profiles(store):
        by_pid[key.pid] = by_pid.get(key.pid, 0) + helpers.total(profile, 1, function="task")
    assert workers <= set(by_pid), (workers, by_pid)
    assert 0.6e9 <= sum(by_pid[pid] for pid in workers) <= 1.2e9, by_pid


HELD_SCRIPT = textwrap.dedent('''
    import os, signal, time
    import cloudprof
    from cloudprof.agent import forking

    forking.ARM_DELAY_S = 1.0  # the child's timer is held this long: first() and second() run before it
    cloudprof.start(strict=True)

    def burn(seconds):
        start = time.thread_time()
        while time.thread_time() - start < seconds:
            sum(range(300))

    def first():
        burn(0.1)

    def second():
        burn(0.1)

    def third():
        burn(0.2)

    pid = os.fork()
    if pid == 0:
        first()
        second()
        held = signal.getitimer(signal.ITIMER_PROF)[1] == 0
        deadline = time.monotonic() + 10
        while signal.getitimer(signal.ITIMER_PROF)[1] == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        third()
        print("held", held, "armed", signal.getitimer(signal.ITIMER_PROF)[1] > 0, flush=True)
        cloudprof.stop()
        os._exit(0)
    os.waitpid(pid, 0)
    print("child", pid, flush=True)
    cloudprof.stop()
''')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_childs_cpu_before_its_timer_is_armed_lands_where_it_was_spent(tmp_path):
    """The child's ITIMER_PROF waits ARM_DELAY_S (for children that exec); the ticks carry its CPU until then.

    Left to the first signal after the arm, the CPU of first() and second() all went to third()'s stack (or to
    whatever the child did at that moment: a pool worker's next task's unpickling)."""
    proc = run_profiled(tmp_path, "held", HELD_SCRIPT)
    assert proc.returncode == 0, proc.stderr
    assert "held True armed True" in proc.stdout, proc.stdout
    child = int(next(l for l in proc.stdout.splitlines() if l.startswith("child")).split()[1])
    profiles = [p for key, p in helpers.raw_profiles(tmp_path / "store") if key.pid == child]
    cpu = {name: sum(helpers.total(p, 1, function=name) for p in profiles) / 1e6
           for name in ("first", "second", "third")}
    assert cpu["first"] == pytest.approx(100, abs=25), cpu
    assert cpu["second"] == pytest.approx(100, abs=25), cpu
    assert cpu["third"] == pytest.approx(200, abs=30), cpu


EXEC_SCRIPT = textwrap.dedent('''
    import os, time
    import cloudprof

    cloudprof.start(strict=True)
    start = time.process_time()
    while time.process_time() - start < 0.2:
        sum(range(1000))
    try:  # a failed exec puts the timer back
        os.execv("/nonexistent/program", ["x"])
    except OSError:
        pass
    import signal
    print("timer after failed exec", signal.getitimer(signal.ITIMER_PROF)[1] > 0, flush=True)
    os.execvp("sh", ["sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo exec-ok"])
''')


def test_exec_from_a_profiled_process_does_not_pass_on_the_timer(tmp_path):
    """Interval timers survive exec; the exec'd program (here a busy shell) must not die of SIGPROF."""
    proc = run_profiled(tmp_path, "execer", EXEC_SCRIPT, timeout=60)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert "timer after failed exec True" in proc.stdout
    assert proc.stdout.strip().endswith("exec-ok")

