"""The threaded programs' own account of their CPU: each block's time on its thread's CPU clock.

A thread's CPU clock (`time.thread_time_ns`, the kernel's per-thread count) is exact, so the CPU a
thread spends inside a `with spent(name):` block is the truth that both profilers estimate. The block
runs in the caller's frame (the context manager wraps no call), so the stacks stay the program's.
`write(*roots)` saves the totals to the file named by ACCURACY_TRUTH (compare.py sets it) with the
program's CPU as the sum of `roots`, the blocks that hold all of its threads' work.
"""
import json
import os
import threading
import time

_cpu: dict[str, int] = {}
_lock = threading.Lock()


class spent:
    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        self.start = time.thread_time_ns()

    def __exit__(self, *exc):
        used = time.thread_time_ns() - self.start
        with _lock:
            _cpu[self.name] = _cpu.get(self.name, 0) + used


def write(*roots: str) -> None:
    path = os.environ.get("ACCURACY_TRUTH")
    if path:
        with open(path, "w") as f:
            json.dump({"cpu_ns": _cpu, "program_ns": sum(_cpu[r] for r in roots)}, f)
