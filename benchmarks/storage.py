"""Storage and uploader costs: what the app pays per submit(), and what each backend pays per object.

    .venv/bin/python benchmarks/storage.py [--objects 300] [--size 60000] [--runs 5]

- submit(): latency seen by the app thread, with storage healthy, hanging (a gate
  that never opens) and down (every put fails, profiles go to the spool);
- put / head / get / list per object on local (with fsync), memory, S3 (moto
  in-process) and GCS (fake-gcs-server on 127.0.0.1, when its binary is installed).

Emulators measure our code plus theirs, not the cloud: treat S3/GCS figures as
overhead ceilings, not as service latency. Prints medians of --runs runs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from cloudprof.agent.uploader import Uploader  # noqa: E402
from cloudprof.errors import StorageUnavailable  # noqa: E402
from cloudprof.storage import MemoryStore, open_store  # noqa: E402


class Gated:
    """A memory store whose puts wait on a gate, or fail, on demand."""

    def __init__(self, mode: str) -> None:
        self.inner = MemoryStore(f"bench-{mode}-{time.monotonic_ns()}")
        self.mode = mode
        self.gate = threading.Event()
        self.url = self.inner.url

    def put(self, key, data, **kwargs):
        if self.mode == "hanging":
            self.gate.wait()
        if self.mode == "down":
            raise StorageUnavailable("benchmark: down")
        return self.inner.put(key, data, **kwargs)


def submit_latency(mode: str, n: int, size: int) -> float:
    store = Gated(mode)
    with tempfile.TemporaryDirectory() as spool:
        up = Uploader(store, spool_dir=spool, backoff_base=0.001, backoff_max=0.01, max_queue_bytes=n * size * 2,
                      max_spool_bytes=n * size * 2).start()
        payload = os.urandom(size)
        times = []
        for i in range(n):
            t0 = time.perf_counter_ns()
            up.submit(f"raw/{i:06d}", payload, {"service": "bench"})
            times.append(time.perf_counter_ns() - t0)
            if i % 10 == 0:
                time.sleep(0.001)  # let the worker run, as a real app would between windows
        store.gate.set()
        up.close(timeout=10)
    return statistics.median(times) / 1000


def backend_costs(url: str, n: int, size: int) -> dict[str, float]:
    store = open_store(url)
    payload = os.urandom(size)
    out = {}
    t0 = time.perf_counter()
    for i in range(n):
        store.put(f"raw/{i:06d}", payload, metadata={"service": "bench"})
    out["put"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        store.head(f"raw/{i:06d}")
    out["head"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    for i in range(n):
        store.get(f"raw/{i:06d}")
    out["get"] = (time.perf_counter() - t0) / n * 1e6
    t0 = time.perf_counter()
    assert sum(1 for _ in store.list("raw/")) == n
    out["list"] = (time.perf_counter() - t0) / n * 1e6
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=300)
    parser.add_argument("--size", type=int, default=60_000, help="bytes per profile (a busy minute is ~20-100 KB)")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    print(f"submit() latency, median µs per call ({args.objects} profiles of {args.size} bytes, {args.runs} runs):")
    for mode in ("healthy", "hanging", "down"):
        runs = [submit_latency(mode, args.objects, args.size) for _ in range(args.runs)]
        print(f"  storage {mode:8s} {statistics.median(runs):8.1f}")

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "bench")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "bench")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    from moto import mock_aws

    gcs = None
    try:
        sys.path.insert(0, str(REPO))
        from tests.servers import _start_fake_gcs

        gcs = _start_fake_gcs(Path(tempfile.mkdtemp()))
        os.environ["STORAGE_EMULATOR_HOST"] = gcs.endpoint_url
    except Exception as exc:  # the benchmark still runs the others
        print(f"(GCS skipped: {exc})")

    print(f"\nper-object cost, median µs ({args.objects} objects of {args.size} bytes, {args.runs} runs):")
    print(f"  {'backend':8s} {'put':>9s} {'head':>9s} {'get':>9s} {'list':>9s}")
    backends = ["local", "memory", "s3"] + (["gcs"] if gcs else [])
    try:
        for backend in backends:
            runs = []
            for run in range(args.runs):
                with tempfile.TemporaryDirectory() as tmp:
                    if backend == "local":
                        runs.append(backend_costs(f"file://{tmp}/store", args.objects, args.size))
                    elif backend == "memory":
                        runs.append(backend_costs(f"memory://bench-{run}-{time.monotonic_ns()}", args.objects, args.size))
                    elif backend == "s3":
                        with mock_aws():
                            import boto3

                            boto3.client("s3").create_bucket(Bucket="bench")
                            runs.append(backend_costs("s3://bench/p", args.objects, args.size))
                    else:
                        bucket = gcs.new_bucket("bench")
                        runs.append(backend_costs(f"gs://{bucket}/p", args.objects, args.size))
            row = {op: statistics.median(r[op] for r in runs) for op in ("put", "head", "get", "list")}
            print(f"  {backend:8s} " + " ".join(f"{row[op]:9.1f}" for op in ("put", "head", "get", "list")))
    finally:
        if gcs is not None:
            gcs.process.terminate()
            gcs.process.wait()


if __name__ == "__main__":
    main()
