"""Profiles made up for tests: deterministic, agent-like, no corpus needed."""

from __future__ import annotations

import random

from cloudprof.pprof import Profile, ProfileBuilder

THREADS = ("MainThread", "worker-1", "asyncio_0")


def python_profile(seed: int, *, samples: int = 200, functions: int = 60, labels: bool = True,
                   time_nanos: int | None = None, duration_nanos: int = 10_000_000_000) -> Profile:
    """An agent-like CPU profile: a service call graph shared by every seed, stacks drawn per seed."""
    graph = random.Random(1234)
    names = [(f"{graph.choice(['', 'Handler.', 'Pool.'])}fn_{i}", f"/srv/app/mod{i % 7}.py", graph.randrange(1, 500))
             for i in range(functions)]
    children = [graph.sample(range(i + 1, functions), min(3, functions - i - 1)) for i in range(functions)]
    rng = random.Random(seed)
    b = ProfileBuilder()
    b.time_nanos = time_nanos if time_nanos is not None else 1_764_000_000_000_000_000 + seed * 10_000_000_000
    b.duration_nanos = duration_nanos
    b.comment(f"service=test pid={seed}")
    for _ in range(samples):
        f = rng.randrange(3)
        frames = []
        for _ in range(rng.randint(1, 12)):
            name, filename, start = names[f]
            frames.append((name, filename, start + rng.randrange(0, 12, 3), start))
            if not children[f]:
                break
            f = rng.choice(children[f])
        frames.reverse()
        count = rng.randint(1, 5)
        lab = (("thread_name", rng.choice(THREADS)),) if labels else ()
        b.add_frames(frames, [count, count * 9_000_000, count * 10_000_000], lab)
    return b.build()
