"""User labels on samples: `with cloudprof.labels(endpoint="/checkout"):`, carried by contextvars.

Each thread and each asyncio task sees its own labels because they live in a
ContextVar. The sampler reads them three ways:
- in the CPU-time signal handler, which runs in the main thread's *current*
  context (the interrupted task's, verified in tests), `current_labels()`;
- for a thread whose event loop is running a task, the task's own Context
  (see tasks.task_context), so labels inherited by child tasks count too;
- for any other thread, a registry `thread id -> labels` that `labels()`
  updates on enter and exit (another thread's current context cannot be read
  from Python). Limit: a thread running inside a copied context without
  entering `labels()` itself (e.g. `asyncio.to_thread`) shows no labels on
  samples taken from outside that thread.

Cardinality is capped per key (default 100 distinct values for the life of the
process): later values fold into "other", so a request id cannot blow up a
profile. Keys reserved for the agent (thread_name, task_name, version) and keys
beyond MAX_KEYS are dropped; both are counted for the profile's comments.
"""

from __future__ import annotations

import contextvars
import logging
import threading

from cloudprof.agent import tasks

__all__ = [
    "OTHER",
    "RESERVED",
    "configure",
    "counters",
    "current_extra",
    "current_labels",
    "labels",
    "labels_by_thread",
    "labels_of_task",
    "may_change",
    "off_first_use",
    "on_first_use",
    "reset",
    "tick_labels",
]

OTHER = "other"
RESERVED = frozenset({"thread_name", "task_name", "version"})
MAX_KEYS = 16
MAX_VALUE_LEN = 128

_log = logging.getLogger("cloudprof")
_LABELS: contextvars.ContextVar[tuple] = contextvars.ContextVar("cloudprof_labels", default=())
_BY_THREAD: dict[int, tuple] = {}
_SEEN: dict[str, set] = {}
_state = {"max_values": 100, "folded": 0, "dropped_keys": 0, "warned": False, "used": False}
_FIRST_USE: list = []  # called just before the process's first labels apply (see on_first_use)
_lock = threading.Lock()


def configure(*, max_values_per_key: int | None = None) -> None:
    """Set the per-key cardinality cap (the agent calls this from its settings)."""
    if max_values_per_key is not None:
        _state["max_values"] = max(1, int(max_values_per_key))


def reset() -> None:
    """Forget the values seen so far and the counters (tests; a forked child keeps its parent's labels)."""
    with _lock:
        _SEEN.clear()
        _state.update(folded=0, dropped_keys=0)


def counters() -> dict[str, int]:
    return {"labels_folded": _state["folded"], "labels_dropped_keys": _state["dropped_keys"]}


def _capped(key: str, value: object) -> str:
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_VALUE_LEN:
        text = text[:MAX_VALUE_LEN]
    seen = _SEEN.get(key)
    if seen is None:
        with _lock:
            seen = _SEEN.setdefault(key, set())
    if text in seen:
        return text
    with _lock:
        if len(seen) < _state["max_values"]:
            seen.add(text)
            return text
        _state["folded"] += 1
    return OTHER


class labels:  # noqa: N801 - used like a function: `with cloudprof.labels(endpoint="/x"):`
    """Context manager adding labels to every sample taken while the block runs (threads and tasks alike)."""

    __slots__ = ("_add", "_token", "_owner", "_previous")

    def __init__(self, **values: object):
        add = {}
        for key, value in values.items():
            if key in RESERVED or (len(add) >= MAX_KEYS and key not in add):
                _state["dropped_keys"] += 1
                if not _state["warned"]:
                    _state["warned"] = True
                    _log.warning("cloudprof: label %r dropped (reserved, or more than %d keys)", key, MAX_KEYS)
                continue
            add[key] = _capped(key, value)
        self._add = add
        self._token = None

    def __enter__(self) -> labels:
        current = _LABELS.get()
        if self._add:
            merged = dict(current)
            merged.update(self._add)
            new = tuple(sorted(merged.items()))
        else:
            new = current
        if new and not _state["used"]:
            _state["used"] = True
            for callback in list(_FIRST_USE):
                try:
                    callback()
                except Exception:  # noqa: BLE001 - the app's labels must not fail over the agent's bookkeeping
                    _log.debug("cloudprof: first-use callback failed", exc_info=True)
        self._token = _LABELS.set(new)
        # Tasks are read through their own Context; plain threads need the registry.
        if tasks.current_task() is None:
            self._owner = threading.get_ident()
            self._previous = _BY_THREAD.get(self._owner, ())
            if new:
                _BY_THREAD[self._owner] = new
        else:
            self._owner = None
        return self

    def __exit__(self, *exc) -> None:
        if self._token is not None:
            try:
                _LABELS.reset(self._token)
            except ValueError:  # exited in another context (a generator moved between tasks): drop ours
                _LABELS.set(())
            self._token = None
        if self._owner is not None:
            if self._previous:
                _BY_THREAD[self._owner] = self._previous
            else:
                _BY_THREAD.pop(self._owner, None)
            self._owner = None


def current_labels() -> tuple:
    """Labels of the calling thread's current context, as sorted (key, value) pairs."""
    return _LABELS.get()


def labels_of_task(task) -> tuple:
    context = tasks.task_context(task)
    if context is None:
        return ()
    return context.get(_LABELS, ())


def labels_by_thread(running: dict[int, object] | None = None) -> dict[int, tuple]:
    """Thread id -> labels for one sampling tick; pass `tasks.running_tasks()` if you already have it."""
    out = dict(_BY_THREAD)
    if running is None:
        running = tasks.running_tasks()
    for thread_id, task in running.items():
        out[thread_id] = labels_of_task(task)
    return out


_NONE: dict = {}


def tick_labels() -> dict[int, tuple]:
    """For the sampler, once per tick: thread id -> labels to append after thread_name.

    A thread whose loop runs a task gets ("task_name", name) then the task's user labels;
    another thread its registered user labels. Empty (and cheap) when there are neither.
    """
    running = tasks.running_tasks() if tasks._CURRENT else _NONE
    if not running and not _BY_THREAD:
        return _NONE
    out = dict(_BY_THREAD)
    for thread_id, task in running.items():
        out[thread_id] = (("task_name", tasks.task_name(task)),) + labels_of_task(task)
    return out


def current_extra() -> tuple:
    """The same for the calling thread, from its own context (the CPU-time signal handler's case)."""
    task = tasks.current_task()
    user = _LABELS.get()
    if task is None:
        return user
    return (("task_name", tasks.task_name(task)),) + user


def on_first_use(callback) -> None:
    """Call `callback()` just before the first labels of the process apply (in the thread that sets them): the
    sampler, which folds the main thread's samples in batches while no labels can change, ends its batch there."""
    _FIRST_USE.append(callback)


def off_first_use(callback) -> None:
    if callback in _FIRST_USE:
        _FIRST_USE.remove(callback)


def may_change() -> bool:
    """Can the calling thread's labels differ from one sample to the next? Once labels were set anywhere in
    the process, or while an event loop runs here (each task is a `task_name`), yes."""
    return _state["used"] or tasks._get_running_loop() is not None


def _forget_thread(thread_id: int) -> None:
    _BY_THREAD.pop(thread_id, None)
