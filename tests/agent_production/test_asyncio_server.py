"""A real uvicorn asyncio app: samples carry the running task's name, and labels(endpoint=...) split after aggregation."""

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

from cloudprof.aggregator import list_partitions, merge_partition, read_merged
from cloudprof.pprof import decode, filter_samples
from cloudprof.storage import open_store
from tests.agent_production import helpers

pytestmark = pytest.mark.slow

PER_ENDPOINT = 40
BURN_MS = 40

APP = textwrap.dedent('''
    import asyncio, time
    import cloudprof

    cloudprof.start(strict=True)

    def spin(ms):
        start = time.thread_time()
        while time.thread_time() - start < ms / 1000:
            sum(range(100))

    def ticker_a_work():
        spin(4)

    def ticker_b_work():
        spin(4)

    async def ticker(work):
        while True:
            work()
            await asyncio.sleep(0.005)

    def checkout_work():
        spin(5)

    def search_work():
        spin(5)

    WORK = {"/checkout": checkout_work, "/search": search_work}
    background = []

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    loop = asyncio.get_running_loop()
                    background.append(loop.create_task(ticker(ticker_a_work), name="ticker-a"))
                    background.append(loop.create_task(ticker(ticker_b_work), name="ticker-b"))
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    for task in background:
                        task.cancel()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path = scope["path"]
        ms = int(scope["query_string"] or 30)
        with cloudprof.labels(endpoint=path):
            for _ in range(ms // 5):  # in slices, so the requests' tasks interleave on the loop
                WORK[path]()
                await asyncio.sleep(0)
        body = path.encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})
''')


def test_uvicorn_task_names_and_endpoint_labels_survive_aggregation(tmp_path):
    (tmp_path / "app.py").write_text(APP)
    store_dir = tmp_path / "store"
    port = helpers.free_port()
    env = dict(os.environ, CLOUDPROF_ENABLED="1", CLOUDPROF_SERVICE="uvicorn-app",
               CLOUDPROF_STORAGE=f"file://{store_dir}", CLOUDPROF_KILL_SWITCH_FILE=str(tmp_path / "kill"),
               CLOUDPROF_UPLOAD_INTERVAL_S="2", PYTHONPATH=f"{tmp_path}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1", "--port", str(port), "--loop", "asyncio",
         "--http", "h11", "--lifespan", "on", "--no-access-log"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        helpers.wait_port(port, proc=server)

        def get(path):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}?{BURN_MS}", timeout=30) as resp:
                return resp.read().decode()

        paths = ["/checkout", "/search"] * PER_ENDPOINT
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert list(pool.map(get, paths)) == paths
        time.sleep(0.5)
    finally:
        server.send_signal(signal.SIGTERM)
        output, _ = server.communicate(timeout=60)
    # uvicorn re-raises the SIGTERM it handled once it has shut down (our handler flushes, then chains to it)
    assert server.returncode in (0, -signal.SIGTERM), output

    raws = helpers.raw_profiles(store_dir)
    assert len(raws) >= 2, output  # several windows (2 s interval) before aggregation
    # task_name: work done by a named task carries that name, and only that one.
    for work, task in (("ticker_a_work", "ticker-a"), ("ticker_b_work", "ticker-b")):
        names = {}
        for _, profile in raws:
            for frames, labels, values in helpers.samples(profile):
                if work in frames:
                    names[labels.get("task_name")] = names.get(labels.get("task_name"), 0) + values[0]
        assert set(names) == {task}, (work, names)
    for _, profile in raws:
        for frames, labels, values in helpers.samples(profile):
            if "checkout_work" in frames or "search_work" in frames:
                assert labels.get("task_name", "").startswith("Task-"), labels  # uvicorn's per-request tasks
                assert "ticker" not in labels["task_name"]
                # coroutine stacks stay readable: the work sits under the ASGI coroutine that awaited it
                assert frames.index("app") > max(frames.index(w) for w in ("checkout_work", "search_work")
                                                 if w in frames), frames

    # Aggregate the hour(s) and split the merged profile by endpoint.
    store = open_store(f"file://{store_dir}")
    merged = []
    for part in list_partitions(store, service="uvicorn-app"):
        merge_partition(store, part.service, part.hour, part.kind)
        data = read_merged(store, part.manifest_key, part.kind)
        merged.append(decode(data))
    assert merged
    # Exact: no sample of one endpoint's work carries the other's label, none is unlabelled. Statistical
    # (about 160 samples per endpoint): each endpoint's CPU, and more tightly their sum. The event loop owns
    # the signal wakeup fd, which the weights no longer depend on.
    expected_ns = PER_ENDPOINT * BURN_MS * 1e6
    both = 0
    for endpoint, mine, other in (("/checkout", "checkout_work", "search_work"),
                                  ("/search", "search_work", "checkout_work")):
        split = [filter_samples(profile, labels={"endpoint": endpoint}) for profile in merged]
        cpu_mine = sum(helpers.total(p, 1, function=mine) for p in split)
        cpu_other = sum(helpers.total(p, 1, function=other) for p in split)
        assert cpu_other == 0, (endpoint, cpu_other)
        assert 0.75 * expected_ns <= cpu_mine <= 1.25 * expected_ns, (endpoint, cpu_mine / 1e6)
        both += sum(helpers.total(p, 1) for p in split)
        # every sample of the endpoint's work carries the label after the merge
        unlabelled = sum(helpers.total(p, 1, function=mine) for p in merged) - cpu_mine
        assert unlabelled == 0, (endpoint, unlabelled)
    assert 0.85 * 2 * expected_ns <= both <= 1.15 * 2 * expected_ns, both / 1e6
