"""Agent-shaped raw uploads with known stacks, for query and render tests (and benchmarks/query.py).

Every window holds the same few request paths, scaled by `weight`; version
"2.0" adds a regression (`pricing.apply_discounts` -> `pricing.slow_rule`) so a
diff has something known to find. Totals are computed here, never by decoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from cloudprof.pprof import ProfileBuilder, encode
from cloudprof.storage.keys import RawKey

HOUR = datetime(2026, 11, 25, 14, tzinfo=timezone.utc)
PERIOD = 10_000_000
SERVICE = "checkout"

_MAIN = ("main", "app/server.py", 12, 1)
_HANDLE = ("server.handle_request", "app/server.py", 40, 38)
PATHS = {
    # name: (frames root-first below handle_request, samples per unit weight)
    "db": ([("views.checkout", "app/views.py", 22, 20), ("db.query", "app/db.py", 88, 80),
            ("sqlalchemy.orm.Query.all", "site-packages/sqlalchemy/orm/query.py", 2680, 2675)], 6),
    "render": ([("views.checkout", "app/views.py", 25, 20), ("templates.render", "app/templates.py", 14, 10)], 3),
    "json": ([("views.cart", "app/views.py", 50, 48), ("json.dumps", "/usr/lib/python3.11/json/__init__.py", 231, 183),
              ("json.encoder.JSONEncoder.encode", "/usr/lib/python3.11/json/encoder.py", 200, 183)], 2),
    "pricing": ([("views.checkout", "app/views.py", 30, 20), ("pricing.apply_discounts", "app/pricing.py", 9, 5)], 1),
}
REGRESSION = ([("views.checkout", "app/views.py", 30, 20), ("pricing.apply_discounts", "app/pricing.py", 12, 5),
               ("pricing.slow_rule", "app/pricing.py", 61, 60)], 8)
THREADS = ("MainThread", "worker-1")


@dataclass(frozen=True)
class Upload:
    key: str
    start_ms: int
    version: str
    totals: dict[str, int]  # "type/unit" -> sum
    threads: dict[str, int]  # thread -> samples/count


def window_profile(start_ms: int, *, version: str = "1.0", weight: int = 1, service: str = SERVICE,
                   host: str = "web-1", pid: int = 100, regression: bool | None = None) -> tuple[bytes, dict, dict]:
    """(gzip pprof, totals, samples per thread) of one 60 s agent window."""
    b = ProfileBuilder()
    b.time_nanos = start_ms * 1_000_000
    b.duration_nanos = 60 * 1_000_000_000
    for text in (f"service={service}", f"version={version}", "environment=test", f"host={host}", f"pid={pid}",
                 "agent=cloudprof/0.1.0"):
        b.comment(text)
    paths = dict(PATHS)
    if regression if regression is not None else version == "2.0":
        paths["regression"] = REGRESSION
    totals = [0, 0, 0]
    threads = {}
    for i, (name, (frames, n)) in enumerate(sorted(paths.items())):
        thread = THREADS[i % 2]
        count = n * weight
        values = [count, count * PERIOD, count * PERIOD * 12 // 10]
        stack = [_MAIN, _HANDLE, *frames]
        b.add_frames(list(reversed(stack)), values, (("thread_name", thread),))
        totals = [a + v for a, v in zip(totals, values)]
        threads[thread] = threads.get(thread, 0) + count
    names = ["samples/count", "cpu/nanoseconds", "wall/nanoseconds"]
    return encode(b.build()), dict(zip(names, totals)), threads


def put_window(store, start: datetime, *, seq: int = 0, version: str = "1.0", weight: int = 1,
               service: str = SERVICE, host: str = "web-1", pid: int = 100, regression: bool | None = None) -> Upload:
    start_ms = int(start.timestamp() * 1000)
    key = RawKey.for_window(service, "cpu", host, pid, start_ms, seq).build()
    data, totals, threads = window_profile(start_ms, version=version, weight=weight, service=service, host=host,
                                           pid=pid, regression=regression)
    store.put(key, data, metadata={"service": service, "version": version, "host": host, "pid": str(pid)})
    return Upload(key, start_ms, version, totals, threads)


def put_hour(store, hour: datetime, *, windows: int = 6, version: str = "1.0", weight: int = 1, seq0: int = 0,
             service: str = SERVICE) -> list[Upload]:
    """`windows` uploads spread over the hour (every 60 / windows minutes), from two hosts."""
    step = 60 // windows
    return [put_window(store, hour + timedelta(minutes=i * step), seq=seq0 + i, version=version, weight=weight,
                       service=service, host=f"web-{i % 2}") for i in range(windows)]


def total(uploads, name: str = "cpu/nanoseconds") -> int:
    return sum(u.totals[name] for u in uploads)


def synthetic_stacks(n: int, *, seed: int = 7, functions: int = 400, depth: tuple[int, int] = (6, 30)):
    """`n` distinct realistic-looking stacks (root first) over a pool of functions, for size and speed tests."""
    rnd = random.Random(seed)
    mods = ["app/views.py", "app/models.py", "app/db.py", "app/pricing.py", "app/cache.py",
            "site-packages/django/core/handlers/base.py", "site-packages/sqlalchemy/orm/query.py",
            "/usr/lib/python3.11/json/encoder.py", "/usr/lib/python3.11/http/client.py", "site-packages/redis/client.py"]
    pool = [(f"{m.rsplit('/', 1)[-1][:-3]}.{'C%d.' % (i % 13) if i % 3 else ''}fn_{i}", m, 10 + (i * 37) % 900)
            for i, m in ((i, mods[i % len(mods)]) for i in range(functions))]
    seen = set()
    stacks = []
    while len(stacks) < n:
        d = rnd.randint(*depth)
        # Skewed choice: a few hot call paths near the root, a long tail deeper down.
        idx = tuple(min(int(rnd.paretovariate(1.2 + k * 0.15)) - 1 + (k * 7) % 20, functions - 1) for k in range(d))
        if idx in seen:
            continue
        seen.add(idx)
        stacks.append([_MAIN, _HANDLE] + [(pool[i][0], pool[i][1], pool[i][2] + 3, pool[i][2]) for i in idx])
    return stacks
