"""Agent-shaped raw uploads for aggregator tests and benchmarks (until the agent writes them itself).

Same shape as the agent: sample types samples/count, cpu/nanoseconds,
wall/nanoseconds, period cpu/nanoseconds 10 ms, labels thread_name (+ task_name,
a user label), identity comments service=/version=/environment=/host=/pid=/agent=,
the same identity as object metadata, key from storage.keys.RawKey.
Deterministic per seed, so expected totals are known without decoding.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from datetime import datetime, timezone

from cloudprof.pprof import ProfileBuilder, encode
from cloudprof.storage.keys import RawKey

__all__ = ["HOUR", "RawUpload", "agent_profile", "put_many", "put_raw", "raw_key", "sum_totals"]

HOUR = datetime(2026, 11, 25, 14, tzinfo=timezone.utc)
PERIOD_NS = 10_000_000

_MODULES = ["app/views.py", "app/models.py", "app/db.py", "lib/json/encoder.py", "lib/http/client.py",
            "site-packages/django/core/handlers/base.py", "site-packages/sqlalchemy/orm/query.py", "app/pricing.py"]


def _function_pool(size: int = 300) -> list[tuple[str, str, int]]:
    rnd = random.Random(1234)
    pool = []
    for i in range(size):
        module = _MODULES[i % len(_MODULES)]
        cls = f"C{i % 17}" if i % 3 else ""
        name = f"{module.rsplit('/', 1)[-1][:-3]}.{cls + '.' if cls else ''}fn_{i}"
        pool.append((name, module, 10 + rnd.randrange(2000)))
    return pool


_POOL = _function_pool()


@dataclass(frozen=True)
class RawUpload:
    key: str
    data: bytes
    metadata: dict[str, str]
    totals: dict[str, int]


@functools.lru_cache(maxsize=8)
def stack_population(size: int, depth: int) -> list[list[tuple[str, str, int, int]]]:
    """The code paths one service runs: every process of it samples from the same few thousand stacks."""
    rnd = random.Random(size * 7919 + depth)
    population = []
    for _ in range(size):
        frames = []
        for _ in range(rnd.randrange(3, depth + 1)):
            name, filename, start_line = _POOL[rnd.randrange(len(_POOL))]
            frames.append((name, filename, start_line + rnd.randrange(30), start_line))
        population.append(frames)
    return population


def agent_profile(service: str, start_ms: int, *, seed: int, version: str = "1.0.0", host: str = "web-1", pid: int = 4242,
                  stacks: int = 40, depth: int = 12, threads: int = 3, duration_s: int = 60, population: int | None = None,
                  sample_types=None, period_type=("cpu", "nanoseconds")) -> tuple[bytes, dict[str, int]]:
    """(gzip pprof bytes, totals per "type/unit") of one agent window.

    population=None draws every stack at random (merges grow with every input: a worst case);
    population=N draws from N shared code paths, hot ones more often, as a real fleet does.
    """
    rnd = random.Random(seed)
    shared = stack_population(population, depth) if population else None
    types = sample_types or (("samples", "count"), ("cpu", "nanoseconds"), ("wall", "nanoseconds"))
    builder = ProfileBuilder(sample_types=types, period_type=period_type, period=PERIOD_NS)
    builder.time_nanos = start_ms * 1_000_000
    builder.duration_nanos = duration_s * 1_000_000_000
    for text in (f"service={service}", f"version={version}", "environment=test", f"host={host}", f"pid={pid}",
                 "agent=cloudprof/0.1.0", "sampled=1200", "dropped=0"):
        builder.comment(text)
    totals = [0] * len(types)
    for _ in range(stacks):
        if shared:
            frames = shared[min(int(rnd.paretovariate(1.2)) - 1, len(shared) - 1) if rnd.random() < 0.5 else rnd.randrange(len(shared))]
        else:
            frames = []
            for _ in range(rnd.randrange(3, depth + 1)):
                name, filename, start_line = _POOL[rnd.randrange(len(_POOL))]
                frames.append((name, filename, start_line + rnd.randrange(30), start_line))
        count = rnd.randrange(1, 50)
        values = [count, count * PERIOD_NS, count * PERIOD_NS + rnd.randrange(PERIOD_NS)][: len(types)]
        labels = [("thread_name", f"worker-{rnd.randrange(threads)}")]
        if rnd.random() < 0.3:
            labels.append(("task_name", f"Task-{rnd.randrange(5)}"))
        if rnd.random() < 0.5:
            labels.append(("endpoint", rnd.choice(["/checkout", "/cart", "/search"])))
        builder.add_frames(frames, values, tuple(labels))
        totals = [a + b for a, b in zip(totals, values)]
    names = [f"{t}/{u}" for t, u in types]
    return encode(builder.build()), dict(zip(names, totals))


def raw_key(service: str, start_ms: int, *, kind: str = "cpu", host: str = "web-1", pid: int = 4242, seq: int = 0) -> str:
    return RawKey.for_window(service, kind, host, pid, start_ms, seq).build()


def put_raw(store, service: str = "checkout", *, hour: datetime = HOUR, index: int = 0, version: str = "1.0.0",
            kind: str = "cpu", host: str | None = None, seed: int | None = None, **shape) -> RawUpload:
    """Write one agent-like upload into `hour`; `index` picks host, pid, window start and seq uniquely."""
    host = host or f"web-{index % 7}"
    pid = 1000 + index % 97
    start_ms = int(hour.timestamp() * 1000) + (index * 997) % 3_540_000
    key = raw_key(service, start_ms, kind=kind, host=host, pid=pid, seq=index)
    data, totals = agent_profile(service, start_ms, seed=index if seed is None else seed, version=version, host=host, pid=pid, **shape)
    metadata = {"service": service, "version": version, "environment": "test", "host": host, "pid": str(pid)}
    store.put(key, data, metadata=metadata)
    return RawUpload(key, data, metadata, totals)


def put_many(store, n: int, service: str = "checkout", *, hour: datetime = HOUR, start: int = 0, **shape) -> list[RawUpload]:
    return [put_raw(store, service, hour=hour, index=i, **shape) for i in range(start, start + n)]


def sum_totals(uploads) -> dict[str, int]:
    out: dict[str, int] = {}
    for upload in uploads:
        for name, value in upload.totals.items():
            out[name] = out.get(name, 0) + value
    return out
