"""A real gunicorn (pre-fork, --preload, 3 sync workers): each worker profiles itself, nothing of the master leaks."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest

from tests.agent_production import helpers

pytestmark = pytest.mark.slow

REQUESTS = 90
BURN_MS = 20
UNSAMPLED = "<cpu after the last sample>"

APP = textwrap.dedent('''
    import os, time
    import cloudprof

    cloudprof.start(strict=True)   # in the master: --preload imports the app before forking

    def master_warmup():
        start = time.process_time()
        while time.process_time() - start < 0.4:
            sum(range(500))

    master_warmup()

    def burn_request(ms):
        start = time.thread_time()
        while time.thread_time() - start < ms / 1000:
            sum(range(200))

    def app(environ, start_response):
        burn_request(int(environ.get("QUERY_STRING") or 20))
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
''')


def test_gunicorn_prefork_workers_profile_themselves(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    store = tmp_path / "store"
    port = helpers.free_port()
    env = dict(os.environ, CLOUDPROF_ENABLED="1", CLOUDPROF_SERVICE="gunicorn-app",
               CLOUDPROF_STORAGE=f"file://{store}", CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--preload", "-w", "3", "-k", "sync", "-b", f"127.0.0.1:{port}",
         "--graceful-timeout", "20", "app:app"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        helpers.wait_port(port, proc=server)
        time.sleep(0.5)  # all three workers booted

        def get(_):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/?{BURN_MS}", timeout=30) as resp:
                return int(resp.read())

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            served_by = list(pool.map(get, range(REQUESTS)))
        import psutil

        workers = {child.pid for child in psutil.Process(server.pid).children()}
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert len(workers) == 3, output
    assert set(served_by) <= workers

    profiles = helpers.raw_profiles(store)
    by_pid: dict[int, list] = {}
    for key, profile in profiles:
        by_pid.setdefault(key.pid, []).append(profile)
        assert helpers.comments(profile)["pid"] == str(key.pid)
    assert workers <= set(by_pid), (workers, set(by_pid), output)
    assert set(by_pid) <= workers | {server.pid}

    # The master's warm-up before the fork is in the master's profile only, never in a worker's copy.
    master_cpu = sum(helpers.total(p, 1, function="master_warmup") for p in by_pid.get(server.pid, []))
    assert master_cpu > 0.2e9
    for pid in workers:
        for profile in by_pid[pid]:
            assert helpers.total(profile, 0, function="master_warmup") == 0, f"worker {pid} counted the master"
            assert helpers.comments(profile)["forks"] == "1"
    # No request work ran in the (idle) master.
    assert sum(helpers.total(p, 0, function="burn_request") for p in by_pid.get(server.pid, [])) == 0

    # CPU of the request work across the workers matches the load: REQUESTS x BURN_MS of thread CPU. The CPU
    # after a worker's last signal (up to one period) is in the explicit "<cpu after the last sample>" leaf
    # rather than in burn_request: count it, and ask that most of the load is still attributed to the
    # request handler.
    expected_ns = REQUESTS * BURN_MS * 1e6
    burn = {pid: sum(helpers.total(p, 1, function="burn_request") for p in by_pid[pid]) for pid in workers}
    residue = {pid: sum(helpers.total(p, 1, leaf=UNSAMPLED) for p in by_pid[pid]) for pid in workers}
    per_worker = {pid: burn[pid] + residue[pid] for pid in workers}
    got = sum(per_worker.values())
    notes = {pid: [{k: helpers.comments(p).get(k) for k in ("sample_hz", "signal_samples", "stopped_by",
                                                          "process_cpu_ns")} for p in by_pid[pid]]
             for pid in workers}
    assert 0.85 * expected_ns <= got <= 1.2 * expected_ns, (got / 1e6, burn, residue, notes)
    assert sum(burn.values()) >= 0.6 * expected_ns, (burn, residue, notes)
    for pid in workers:  # each worker's profile accounts for the CPU its process used
        used = sum(int(helpers.comments(p)["process_cpu_ns"]) for p in by_pid[pid])
        sampled = sum(helpers.total(p, 1) for p in by_pid[pid])
        assert 0.8 * used <= sampled <= 1.05 * used, (pid, used / 1e6, sampled / 1e6)
    for pid in set(served_by):
        share = served_by.count(pid) / REQUESTS
        assert abs(per_worker[pid] / got - share) < 0.12, (pid, share, per_worker)


PLAIN_APP = textwrap.dedent('''
    import os, time

    def app(environ, start_response):
        start = time.thread_time()
        while time.thread_time() - start < 0.02:
            sum(range(200))
        body = str(os.getpid()).encode()
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
        return [body]
''')


def test_cloudprof_run_gunicorn_without_code_changes(tmp_path):
    """`cloudprof run -- gunicorn ...`: the agent starts in the master, and each forked worker restarts it."""
    (tmp_path / "plainapp.py").write_text(PLAIN_APP)
    store = tmp_path / "store"
    port = helpers.free_port()
    env = dict(os.environ, CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"),
               PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    for key in ("CLOUDPROF_ENABLED", "CLOUDPROF_SERVICE", "CLOUDPROF_STORAGE"):
        env.pop(key, None)
    cloudprof_cli = os.path.join(os.path.dirname(sys.executable), "cloudprof")
    server = subprocess.Popen(
        [cloudprof_cli, "run", "--service", "plain-app", "--storage", f"file://{store}", "--",
         sys.executable, "-m", "gunicorn", "-w", "2", "-k", "sync", "-b", f"127.0.0.1:{port}", "plainapp:app"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        helpers.wait_port(port, proc=server)
        time.sleep(0.5)

        def get(_):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30) as resp:
                return int(resp.read())

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            served_by = list(pool.map(get, range(40)))
        import psutil

        workers = {child.pid for child in psutil.Process(server.pid).children()}
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    by_pid: dict[int, list] = {}
    for key, profile in helpers.raw_profiles(store):
        by_pid.setdefault(key.pid, []).append(profile)
    assert workers <= set(by_pid), (workers, set(by_pid), output)
    for pid in workers:
        assert all(helpers.comments(p)["forks"] == "1" for p in by_pid[pid])
    app_cpu = sum(helpers.total(p, 1, function="app") + helpers.total(p, 1, leaf=UNSAMPLED)
                  for pid in workers for p in by_pid[pid])
    assert 0.6 * 40 * 20e6 <= app_cpu <= 1.3 * 40 * 20e6, app_cpu / 1e6
    assert set(served_by) <= workers
