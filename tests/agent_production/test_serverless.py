"""Serverless: platform names, and a simulated Lambda life cycle with SIGSTOP freezes between invocations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from cloudprof.agent import serverless
from tests.agent_production import helpers


@pytest.mark.parametrize("env,expected", [
    ({"AWS_LAMBDA_FUNCTION_NAME": "Orders_Handler", "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST", "AWS_REGION": "eu-west-1",
      "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"},
     {"environment": "aws-lambda", "service": "orders_handler", "version": "$LATEST",
      "tags": {"region": "eu-west-1", "memory_mb": "512"}}),
    ({"K_SERVICE": "checkout-api", "K_REVISION": "checkout-api-00042-xyz", "K_CONFIGURATION": "checkout-api"},
     {"environment": "cloud-run", "service": "checkout-api", "version": "checkout-api-00042-xyz",
      "tags": {"configuration": "checkout-api"}}),
    ({"K_SERVICE": "resize", "K_REVISION": "resize-00003", "FUNCTION_TARGET": "resize_image"},
     {"environment": "cloud-functions", "service": "resize", "version": "resize-00003", "tags": {"target": "resize_image"}}),
    ({"FUNCTION_NAME": "Legacy Fn", "X_GOOGLE_FUNCTION_VERSION": "12"},
     {"environment": "cloud-functions", "service": "legacy-fn", "version": "12"}),
    ({"CLOUD_RUN_JOB": "nightly", "CLOUD_RUN_EXECUTION": "nightly-abc"},
     {"environment": "cloud-run-job", "service": "nightly", "version": "nightly-abc"}),
    ({"HOME": "/root"}, {}),
], ids=["lambda", "cloud-run", "functions-gen2", "functions-gen1", "run-job", "none"])
def test_platform_settings(env, expected):
    assert serverless.platform_settings(env) == expected
    assert serverless.platform(env) == expected.get("environment", "")


def test_explicit_settings_beat_the_platform(monkeypatch):
    env = {"AWS_LAMBDA_FUNCTION_NAME": "fn", "AWS_LAMBDA_FUNCTION_VERSION": "3"}
    monkeypatch.setenv("CLOUDPROF_SERVICE", "from-env")
    got = serverless._settings_with_platform({}, env)
    assert "service" not in got and got["version"] == "3" and got["environment"] == "aws-lambda"
    got = serverless._settings_with_platform({"version": "v9"}, env)
    assert got["version"] == "v9"


RUNTIME = textwrap.dedent('''
    import json, sys, time
    from cloudprof.agent.serverless import handler

    def burn(ms):
        start = time.thread_time()
        while time.thread_time() - start < ms / 1000:
            sum(range(300))

    @handler
    def lambda_handler(event, context):
        burn(event["ms"])
        return {"n": event["n"]}

    # A runtime loop like Lambda's: wait for the next event, invoke, post the result.
    for line in sys.stdin:
        event = json.loads(line)
        start = time.time_ns()
        result = lambda_handler(event, None)
        print(json.dumps({"n": result["n"], "start": start, "end": time.time_ns()}), flush=True)
''')


@pytest.mark.slow
def test_lambda_life_cycle_with_freezes(tmp_path):
    store = tmp_path / "store"
    env = dict(os.environ, AWS_LAMBDA_FUNCTION_NAME="orders", AWS_LAMBDA_FUNCTION_VERSION="7",
               CLOUDPROF_ENABLED="1", CLOUDPROF_STORAGE=f"file://{store}",
               CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"))
    env.pop("CLOUDPROF_SERVICE", None)
    (tmp_path / "runtime.py").write_text(RUNTIME)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "runtime.py")], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    invocations = []
    freeze_s = 1.5
    try:
        for n, ms in enumerate((150, 60, 200, 100)):
            proc.stdin.write(json.dumps({"n": n, "ms": ms}) + "\n")
            proc.stdin.flush()
            reply = json.loads(proc.stdout.readline())
            assert reply["n"] == n
            invocations.append((reply["start"], reply["end"], ms))
            # Flushed before the freeze: the invocation's profile is in storage when the handler has returned.
            assert len(helpers.raw_profiles(store)) == n + 1
            proc.send_signal(signal.SIGSTOP)
            time.sleep(freeze_s)
            proc.send_signal(signal.SIGCONT)
        proc.stdin.close()
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()

    if os.environ.get("KEEP_STORE"):
        import shutil
        shutil.copytree(store, os.environ["KEEP_STORE"], dirs_exist_ok=True)
    profiles = sorted(helpers.raw_profiles(store), key=lambda kp: kp[1].time_nanos)
    assert len(profiles) == len(invocations)  # one window per invocation, nothing while frozen or idle
    for (key, profile), (start, end, ms) in zip(profiles, invocations):
        notes = helpers.comments(profile)
        assert key.service == "orders"
        assert notes["version"] == "7" and notes["environment"] == "aws-lambda"
        # The window is the invocation: it starts after the previous freeze and ends before the next one.
        assert start - 50e6 <= profile.time_nanos and profile.time_nanos + profile.duration_nanos <= end + 5e6
        assert profile.duration_nanos <= (end - start) + 50e6
        wall = helpers.total(profile, 2)
        assert wall <= profile.duration_nanos * 1.1 + 20e6, (wall, profile.duration_nanos)
        # All the invocation's CPU is in its profile; with 6-20 samples per invocation a sample's worth
        # (10 ms) may land in the wrapper instead of burn(), so attribution is checked loosely. burn()'s
        # own clock also counts the signal handler (the agent's CPU, which profiles leave out).
        main_cpu = helpers.total(profile, 1, label=("thread_name", "MainThread"))
        assert 0.75 * ms * 1e6 <= main_cpu <= 1.5 * ms * 1e6, (ms, main_cpu / 1e6)
        assert main_cpu >= 0.9 * int(notes["process_cpu_ns"]) - 15e6, (main_cpu, notes["process_cpu_ns"])
        assert helpers.total(profile, 1, function="burn") >= 0.5 * ms * 1e6


def test_async_handler_flushes_each_invocation_and_toggle_off_is_inert(monkeypatch):
    import asyncio
    import uuid

    import cloudprof
    from cloudprof.agent import current
    from cloudprof.storage import open_store

    for key in [k for k in os.environ if k.startswith("CLOUDPROF_")]:
        monkeypatch.delenv(key)
    calls = []

    @serverless.handler(environ={"HOME": "/"})
    def plain(event, context):
        calls.append(event)
        return event

    assert plain(1, None) == 1 and current() is None  # profiling off: no agent, handler untouched

    url = f"memory://lambda-{uuid.uuid4().hex[:8]}"
    env = {"AWS_LAMBDA_FUNCTION_NAME": "async-fn", "AWS_LAMBDA_FUNCTION_VERSION": "2"}

    @serverless.handler(environ=env, enabled=True, storage=url, kill_switch_file="")
    async def handler(event, context):
        start = time.thread_time()
        while time.thread_time() - start < 0.05:
            sum(range(300))
        await asyncio.sleep(0)
        return event * 2

    try:
        for n in range(3):
            assert asyncio.run(handler(n, None)) == 2 * n
            keys = [info.key for info in open_store(url).list("raw/")]
            assert len(keys) == n + 1  # uploaded before the handler returned
            assert current().paused
        assert "service=async-fn" in keys[0]
    finally:
        cloudprof.stop(flush=False)
