"""Life cycle: the toggle, start() that never raises, flush at stop/exit/SIGTERM, and every profile readable by go tool pprof."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import cloudprof
from cloudprof.agent import lifecycle
from cloudprof.agent.clocks import ManualClock
from cloudprof.agent.window import HOUR_NS
from cloudprof.config import load_settings
from cloudprof.errors import ConfigError
from cloudprof.pprof import decode, sample_totals, strings
from cloudprof.storage import open_store
from tests import support


def profiles(root):
    return sorted(root.rglob("*.pb.gz"))


def comments(profile):
    table = strings(profile)
    return dict(table[i].split("=", 1) for i in profile.comment if "=" in table[i])


def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(i * i for i in range(300))


def test_toggle_off_starts_nothing(tmp_path):
    before = set(threading.enumerate())
    handler = signal.getsignal(signal.SIGPROF)
    term = signal.getsignal(signal.SIGTERM)
    assert cloudprof.start(service="svc", storage=f"file://{tmp_path}/s") is False  # enabled defaults to false
    assert set(threading.enumerate()) <= before  # none started (one of an earlier test may have ended meanwhile)
    assert signal.getsignal(signal.SIGPROF) == handler and signal.getsignal(signal.SIGTERM) == term
    assert signal.getitimer(signal.ITIMER_PROF) == (0.0, 0.0)
    assert not (tmp_path / "s").exists()


def test_toggle_off_does_not_even_load_the_settings_model(tmp_path):
    """Off by default and named nowhere: start() returns without importing pydantic (~100 ms of CPU)."""
    code = ("import sys, cloudprof\n"
            "off = cloudprof.start(service='svc')\n"
            "print(off, 'pydantic' in sys.modules)\n"
            "print(cloudprof.start(service='svc', enabled=False), 'pydantic' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert out.stdout.split() == ["False", "False", "False", "True"], out.stdout + out.stderr
    (tmp_path / "cloudprof.toml").write_text("enabled = 'no'\n")  # named in a file: read, and off
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env,
                         timeout=60)
    assert out.stdout.split()[:2] == ["False", "True"], out.stdout + out.stderr


@pytest.mark.parametrize("bad", [{"sample_hz": "lots"}, {"service": "Not Valid"}, {"service": None},
                                 {"storage": "nope"}, {"bogus": 1}],
                         ids=["rate", "service-name", "no-service", "storage", "unknown"])
def test_bad_setting_never_raises_and_logs_one_line(caplog, bad):
    before = set(threading.enumerate())
    with caplog.at_level(logging.ERROR, logger="cloudprof"):
        assert cloudprof.start(**{"enabled": True, "service": "svc", **bad}) is False
    records = [r for r in caplog.records if r.name == "cloudprof"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "profiling is off" in message and "\n" not in message
    assert f"setting {next(iter(bad))}" in message
    assert set(threading.enumerate()) <= before  # none started (one of an earlier test may have ended meanwhile)
    with pytest.raises(ConfigError):
        cloudprof.start(strict=True, **{"enabled": True, "service": "svc", **bad})


def test_start_is_idempotent_and_stop_flushes(tmp_path):
    url = f"file://{tmp_path}/store"
    assert cloudprof.start(enabled=True, service="svc", storage=url)
    threads = {t.name for t in threading.enumerate()}
    assert {"cloudprof-sampler", "cloudprof-windows", "cloudprof-uploader"} <= threads
    assert cloudprof.start(enabled=True, service="other", storage=url)  # no second agent
    assert sum(t.name == "cloudprof-sampler" for t in threading.enumerate()) == 1
    burn(0.3)
    assert cloudprof.stop(flush=True, timeout=5)
    assert not any(t.name.startswith("cloudprof") and t.is_alive() for t in threading.enumerate()
                   if t.name != "cloudprof-uploader")
    (path,) = profiles(tmp_path / "store")
    assert "/raw/service=svc/" in path.as_posix() and f".{os.getpid()}." in path.name
    assert signal.getsignal(signal.SIGPROF) == signal.SIG_DFL
    assert cloudprof.stop() is True  # stopping twice is fine


def test_profiling_block_and_app_config_mapping(tmp_path):
    app_config = {"CLOUDPROF": {"ENABLED": True, "SERVICE": "flask-app", "STORAGE": f"file://{tmp_path}/s"}}
    with cloudprof.profiling(config=app_config["CLOUDPROF"]) as on:
        assert on
        burn(0.2)
    assert lifecycle.current() is None
    assert profiles(tmp_path / "s")


def test_windows_cut_at_the_hour_with_a_fake_clock():
    hour = 1_800_000_000 * 10**9 // HOUR_NS * HOUR_NS
    clock = ManualClock(now_ns=hour + HOUR_NS - 70 * 10**9)
    store = open_store("memory://lifecycle-hour")
    settings = load_settings({"enabled": True, "service": "svc", "upload_interval_s": 60})
    agent = lifecycle.Agent(settings, clock=clock, store=store).start()
    try:
        burn(0.2)
        assert agent.poll() is False
        clock.advance(60)
        assert agent.poll() is True  # the interval
        burn(0.2)
        clock.advance(10)
        assert agent.poll() is True  # the hour
        clock.advance(5)
    finally:
        agent.stop(flush=True, timeout=5)
    keys = [info.key for info in store.list("raw/")]
    assert len(keys) == 3, keys
    hours = sorted({k.split("/")[3] for k in keys})
    assert len(hours) == 2  # the last window is in the next hour
    p = decode(store.get(keys[1]) if "hour" in keys[1] else store.get(keys[0]))
    assert p.duration_nanos > 0


def run_python(code, tmp_path, env=None, **kw):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(support.REPO)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, env=full_env,
                          capture_output=True, text=True, timeout=60, **kw)


def test_flush_at_exit(tmp_path):
    out = run_python(f"""
        import cloudprof, time
        cloudprof.start(enabled=True, service="atexit", storage="file://{tmp_path}/s", strict=True)
        end = time.thread_time() + 0.3
        while time.thread_time() < end: pass
        """, tmp_path)
    assert out.returncode == 0, out.stderr
    assert profiles(tmp_path / "s")


def _busy_profiled_child(tmp_path, app_setup: str = "") -> subprocess.Popen:
    """A child that profiles itself into tmp_path/s and burns CPU until signalled; returned once it is ready."""
    code = f"""
        import cloudprof, os, signal, sys, time
        {app_setup}
        cloudprof.start(enabled=True, service="sigterm", storage="file://{tmp_path}/s", strict=True)
        print("ready", flush=True)
        while True:
            sum(i for i in range(1000))
        """
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(support.REPO)})
    assert proc.stdout.readline().strip() == "ready"
    return proc


def test_sigterm_flushes_and_chains_the_apps_handler(tmp_path):
    # One line: textwrap.dedent of the child's code needs every line at the same indent.
    proc = _busy_profiled_child(tmp_path, "signal.signal(signal.SIGTERM, lambda s, f: (print('app handler ran', "
                                          "flush=True), sys.exit(3)))")
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 3, err
    assert "app handler ran" in out
    assert profiles(tmp_path / "s")


def test_sigterm_without_an_app_handler_still_terminates(tmp_path):
    proc = _busy_profiled_child(tmp_path)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGTERM
    assert profiles(tmp_path / "s")


WORKLOAD = """
import threading, time, cloudprof

class Service:
    def handle(self):
        end = time.thread_time() + 0.6
        while time.thread_time() < end:
            sum(i * i for i in range(200))

def sleeper():
    time.sleep(0.8)

cloudprof.start(enabled=True, service="pprof-check", storage="file://{store}", upload_interval_s=1,
                version="1.2.3", environment="test", tags="team=perf", strict=True)
t = threading.Thread(target=sleeper, name="sleeper"); t.start()
Service().handle()
t.join()
"""


def test_profiles_pass_go_tool_pprof_and_carry_identity(tmp_path, go_bin):
    store = tmp_path / "s"
    out = run_python(WORKLOAD.format(store=store), tmp_path)
    assert out.returncode == 0, out.stderr
    paths = profiles(store)
    assert paths
    merged_cpu = {}
    for path in paths:
        check = subprocess.run([go_bin, "tool", "pprof", "-raw", str(path)], capture_output=True, text=True,
                               timeout=120)
        assert check.returncode == 0, check.stderr
        top = subprocess.run([go_bin, "tool", "pprof", "-top", "-sample_index=cpu", str(path)],
                             capture_output=True, text=True, timeout=120)
        assert top.returncode == 0, top.stderr
        p = decode(path.read_bytes())
        c = comments(p)
        assert (c["service"], c["version"], c["environment"], c["pid"]) == (
            "pprof-check", "1.2.3", "test", path.name.split(".")[1])
        assert c["agent"].startswith("cloudprof/") and c["tags"] == "team=perf" and c["sampler"] == "signal"
        assert c["thread_cpu"] == "timers" and "thread_cpu_fallback" not in c
        assert float(c["agent_cpu_pct"]) >= 0
        table = strings(p)
        assert [table[st.type] + "/" + table[st.unit] for st in p.sample_type] == [
            "samples/count", "cpu/nanoseconds", "wall/nanoseconds"]
        assert table[p.period_type.type] == "cpu" and p.period > 0 and table[p.default_sample_type] == "cpu"
        for s in p.sample:
            assert [table[lb.key] for lb in s.label] == ["thread_name"]
        for k, v in sample_totals(p).items():
            merged_cpu[k] = merged_cpu.get(k, 0) + v
        names = {table[f.name] for f in p.function}
        if "Service.handle" in names:
            fn = next(f for f in p.function if table[f.name] == "Service.handle")
            assert table[fn.filename] == "<string>" and fn.start_line == 5
    assert merged_cpu["cpu/nanoseconds"] >= 0.5e9
    assert "Service.handle" in subprocess.run([go_bin, "tool", "pprof", "-top", str(paths[0])],
                                              capture_output=True, text=True).stdout or len(paths) > 1


def test_cloudprof_run_profiles_a_program_and_its_children(tmp_path):
    store = tmp_path / "s"
    child = "import time\\nend = time.thread_time() + 0.3\\nwhile time.thread_time() < end: pass\\n"
    script = tmp_path / "app.py"
    script.write_text(textwrap.dedent(f"""
        import subprocess, sys, time
        end = time.thread_time() + 0.3
        while time.thread_time() < end: pass
        subprocess.run([sys.executable, "-c", "{child}"], check=True)
        """))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPROF_")}
    out = subprocess.run([sys.executable, "-m", "cloudprof", "run", "--service", "zero-code", "--storage",
                          f"file://{store}", "--", sys.executable, str(script)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    pids = {p.name.split(".")[1] for p in profiles(store / "raw" / "service=zero-code")}
    assert len(pids) == 2, profiles(store)


def test_cloudprof_run_fails_loudly_on_a_bad_setting(tmp_path):
    out = subprocess.run([sys.executable, "-m", "cloudprof", "run", "--service", "Bad Name", "--", sys.executable,
                          "-c", "print('ran')"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "ran" not in out.stdout
    assert out.stderr.count("\n") == 1 and "setting service='Bad Name'" in out.stderr
