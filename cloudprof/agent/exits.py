"""Threads report their own end: the CPU they used after the sampler last saw them would otherwise be lost.

A thread's CPU clock cannot be read once the thread is gone, and ticks come
every 10 ms or less often. A thread-per-request server's threads often live
less than that: without this, most of their CPU was in no profile. Wrapping
`threading.Thread` (once, for the life of the process) lets each thread read
its own clock as it ends and queue the reading for the samplers; ticks turn
the queue into samples. Python 3.11 and later: 3.10's `_bootstrap_inner` does not
call `_delete`, so there ends go unreported (and the CPU after a thread's last
tick is lost, as before).

Threads also report their start, in the thread itself before its target runs
(`on_boot`): the sampler makes the thread's CPU timer there, so that its first
sample carries no CPU spent before the timer existed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from types import CodeType
from typing import NamedTuple

__all__ = ["Ended", "forget_all", "install", "off_boot", "on_boot", "on_end", "unwatch", "watch"]

_QUEUE_MAX = 100_000  # readings kept for a sampler that does not tick (oldest dropped beyond)
_watchers: list[deque] = []
_enders: list = []  # called in each ending thread, after it left threading._active and before it reports
_booters: list = []  # called in each thread that starts, before it runs its target
_state = {"installed": False}


class Ended(NamedTuple):
    ident: int
    native_id: int | None
    cpu_ns: int  # the thread's CPU clock at its end
    name: str
    target: CodeType | None  # the code the thread ran (its target or its run method)


def install() -> None:
    """Wrap Thread.start, Thread._set_native_id and Thread._delete once; threads started from now on report
    their start and end.

    `_set_native_id` is the first thing a thread does (from `_bootstrap_inner`, before it lets `start()`
    return and before `run()`) that knows its native id; `_delete` the last; both in the thread itself.
    `start` notes the code the thread will run, which `run()` forgets as it ends. None adds a frame to the
    stacks of a running thread.
    """
    cls = threading.Thread
    if _state["installed"] or not hasattr(cls, "_delete"):  # a threading without it: ends go unreported
        return
    start, delete = cls.start, cls._delete  # type: ignore[attr-defined]
    set_native_id = getattr(cls, "_set_native_id", None)

    def _start(self) -> None:
        if _watchers:
            try:
                self._cloudprof_target = _target_code(self)
            except Exception:  # noqa: BLE001 - odd targets (proxies, slotted subclasses) are named no further
                pass
        start(self)

    def _set_native_id(self) -> None:
        set_native_id(self)
        if self._started.is_set():  # not a start: a forked child (threading's or multiprocessing's) names it again
            return
        for booter in _booters:
            try:
                booter(self)
            except Exception:  # noqa: BLE001 - starting a thread must never fail because of us
                pass

    def _delete(self) -> None:
        try:
            delete(self)
        finally:
            for ender in _enders:
                try:
                    ender()
                except Exception:  # noqa: BLE001 - a thread's end must never fail because of us
                    pass
            if _watchers:
                _report(self, getattr(self, "_cloudprof_target", None))

    cls.start = functools.update_wrapper(_start, start)
    cls._delete = functools.update_wrapper(_delete, delete)  # type: ignore[attr-defined]
    if set_native_id is not None:  # a platform without native ids: threads get their timers at a tick
        cls._set_native_id = functools.update_wrapper(_set_native_id, set_native_id)  # type: ignore[attr-defined]
    _state["installed"] = True


def on_end(ender) -> None:
    """Call `ender()` in every thread that ends from now on (once per callable, for the life of the process)."""
    if ender not in _enders:
        _enders.append(ender)


def on_boot(booter) -> None:
    """Call `booter(thread)` in each thread that starts from now on, before its `run()` and before its
    `start()` returns; `off_boot` undoes it."""
    if booter not in _booters:
        _booters.append(booter)


def off_boot(booter) -> None:
    try:
        _booters.remove(booter)
    except ValueError:
        pass


def watch() -> deque:
    """A new queue that receives an `Ended` for each thread that ends from now on."""
    queue: deque = deque(maxlen=_QUEUE_MAX)
    _watchers.append(queue)
    return queue


def unwatch(queue: deque) -> None:
    try:
        _watchers.remove(queue)
    except ValueError:
        pass


def forget_all() -> None:
    """In a forked child: the parent's samplers are gone, their queues would only grow."""
    _watchers.clear()
    _booters.clear()


def _report(thread: threading.Thread, target: CodeType | None) -> None:
    try:
        ended = Ended(threading.get_ident(), threading.get_native_id(), time.thread_time_ns(), thread.name, target)
        for queue in list(_watchers):
            queue.append(ended)
    except Exception:  # noqa: BLE001 - a thread's end must never fail because of us
        pass


def _target_code(thread: threading.Thread) -> CodeType | None:
    target = getattr(thread, "_target", None)
    if target is None and type(thread).run is not threading.Thread.run:
        target = type(thread).run  # a subclass's own run()
    target = getattr(target, "__func__", target)  # a bound method: its function
    code = getattr(target, "__code__", None)
    return code if isinstance(code, CodeType) else None
