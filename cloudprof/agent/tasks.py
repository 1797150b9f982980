"""Which asyncio task each thread's event loop is running right now, for the `task_name` sample label.

asyncio keeps `loop -> running task` in `asyncio.tasks._current_tasks` and every
loop started by `run_forever` records its thread in `loop._thread_id`, so one
pass over that (tiny) dict per tick maps thread ids to tasks without touching
the app. Loops that do not record their thread (some third-party loops) are
skipped: their samples carry no `task_name`.

`on_loop_start(callback)` calls `callback()` in the thread where an asyncio loop has
just been set to run (`asyncio.events._set_running_loop`, which asyncio's own loops call as
they start; a loop that captured it earlier, such as uvloop's, is not seen): the
sampler, which folds a lone main thread's samples in half-second batches while no
label can change, ends its batch there rather than at its next fold.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc

__all__ = ["current_task", "off_loop_start", "on_loop_start", "running_tasks", "task_context", "task_name"]

try:
    from asyncio.tasks import _current_tasks as _CURRENT  # the C module's dict (3.7+), or the Python one
except ImportError:  # pragma: no cover - asyncio without the private dict
    _CURRENT = {}
_get_running_loop = asyncio.events._get_running_loop
_LOOP_START: list = []
_set_running_loop = asyncio.events._set_running_loop


def _set_running_loop_seen(loop) -> None:
    _set_running_loop(loop)  # first: a signal handler running in between sees the loop
    if loop is not None:
        for callback in tuple(_LOOP_START):
            try:
                callback()
            except Exception:  # noqa: BLE001 - never fail the app's loop over the agent
                pass


def on_loop_start(callback) -> None:
    if asyncio.events._set_running_loop is _set_running_loop:
        asyncio.events._set_running_loop = _set_running_loop_seen  # once: a wrapper put on after ours stays
    _LOOP_START.append(callback)


def off_loop_start(callback) -> None:
    if callback in _LOOP_START:
        _LOOP_START.remove(callback)


def running_tasks() -> dict[int, object]:
    """Thread id -> the task its event loop is running at this instant (threads between tasks are absent)."""
    try:
        items = list(_CURRENT.items())
    except RuntimeError:  # the dict changed size under us (a loop started or stopped): skip this tick
        return {}
    out = {}
    for loop, task in items:
        thread_id = getattr(loop, "_thread_id", None)
        if thread_id is not None and task is not None:
            out[thread_id] = task
    return out


def current_task():
    """The task running in the calling thread (safe in a signal handler: no exception, no allocation)."""
    loop = _get_running_loop()
    if loop is None:
        return None
    return _CURRENT.get(loop)


def task_name(task) -> str:
    try:
        return task.get_name()
    except Exception:  # noqa: BLE001 - a foreign task type; never fail a sample over a name
        return type(task).__name__


def task_context(task) -> contextvars.Context | None:
    """The contextvars.Context a task runs its steps in (read from another thread).

    Python tasks keep it in `_context`. The C Task of 3.11 does not expose it, but
    its GC traversal visits the context first; `gc.get_referents` reads that
    without running any code. Anything unexpected gives None (the caller then
    falls back to labels recorded by `labels()` itself).
    """
    context = getattr(task, "_context", None)
    if isinstance(context, contextvars.Context):
        return context
    if hasattr(task, "get_context"):  # 3.12+
        try:
            return task.get_context()
        except Exception:  # noqa: BLE001
            return None
    try:
        referents = gc.get_referents(task)
    except Exception:  # noqa: BLE001
        return None
    if referents and isinstance(referents[0], contextvars.Context):
        return referents[0]
    return None

