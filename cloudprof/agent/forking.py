"""Pre-fork servers: after `fork()`, the child profiles itself under its own pid with a fresh agent.

gunicorn, uwsgi and Celery start the app (and often the agent) in a master, then
fork workers. A forked child has none of the parent's threads, may hold copies of
locks some other thread held at the fork, and carries the parent's sample
buffers, upload queue and SIGPROF handler. So the child drops the parent's agent
object without touching it (its threads do not exist, its buffers are the
parent's samples: uploading them again would count them twice) and starts a new
Agent from the same settings: new sampler, window thread, uploader and locks,
keyed by its pid.

Interval timers survive `execve`, and a child that forks only to exec
(os.spawn*, pty.spawn, daemonisers) would be killed by a SIGPROF it cannot
handle. The child's ITIMER_PROF is therefore armed only after ARM_DELAY_S, by
which time such a child has long exec'd; until then the sampler thread takes the
ticks, and they carry the main thread's CPU (`Sampler.hold_timer`).

The same holds for exec without a fork (a master re-executing itself on
upgrade): os.execv/os.execve are wrapped to clear the timer first.

multiprocessing's fork-pool workers leave through os._exit (no atexit), after
running multiprocessing's own finalizers: the child's last window is flushed
from one of those. (Celery's billiard has its own copy of that machinery, not
hooked: its workers rely on the upload interval and SIGTERM.)
"""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
import threading
import time

__all__ = ["ARM_DELAY_S", "forks_seen", "install"]

ARM_DELAY_S = 0.2

log = logging.getLogger("cloudprof")
_state = {"installed": False, "forks": 0, "held": False}


def install() -> None:
    """Register the fork hooks and the exec guard once per process (children inherit them)."""
    if _state["installed"] or not hasattr(os, "register_at_fork"):
        return
    os.register_at_fork(before=_before, after_in_parent=_after_in_parent, after_in_child=_after_in_child)
    _guard_exec()
    _state["installed"] = True


def _guard_exec() -> None:
    """Clear ITIMER_PROF right before os.execv/os.execve (and so os.execl*, os.execvp*, which call them).

    Interval timers survive exec and the new program's SIGPROF action is "terminate": without this a
    process running the agent that re-execs itself (gunicorn's USR2 upgrade) or another program dies
    with "Profiling timer expired". If exec fails, the timer is put back.
    """
    if not hasattr(signal, "setitimer"):
        return
    for name in ("execv", "execve"):
        original = getattr(os, name, None)
        if original is None or getattr(original, "__cloudprof_guard__", False):
            continue

        def guarded(*args, _original=original, **kwargs):
            try:
                before = signal.setitimer(signal.ITIMER_PROF, 0, 0)
            except (OSError, ValueError):
                before = (0.0, 0.0)
            try:
                return _original(*args, **kwargs)
            except BaseException:
                if before[1] > 0:
                    signal.setitimer(signal.ITIMER_PROF, before[0] or before[1], before[1])
                raise

        functools.update_wrapper(guarded, original)
        guarded.__cloudprof_guard__ = True
        setattr(os, name, guarded)


def forks_seen() -> int:
    """How many times this process (or its ancestors, before they forked it) restarted the agent in a child."""
    return _state["forks"]


def _before() -> None:
    # Fork with the life-cycle lock held, so the child never sees a start() or stop() half done.
    from cloudprof.agent import lifecycle

    _hook_multiprocessing()
    _state["held"] = lifecycle._lock.acquire(timeout=1.0)


def _after_in_parent() -> None:
    from cloudprof.agent import lifecycle

    if _state["held"]:
        _state["held"] = False
        lifecycle._lock.release()


def _after_in_child() -> None:
    from cloudprof.agent import exits, labels, lifecycle

    try:
        exits.forget_all()
        if _state["held"]:
            _state["held"] = False
            lifecycle._lock.release()  # the forking thread is this thread in the child: it owns the lock
        labels._lock = threading.Lock()
        # CPython (3.11) keeps the parent's native id on the forking thread's Thread object; the agent derives
        # the thread's CPU clock from it, which would read the parent's thread (or fail) in every worker.
        current = threading.current_thread()
        if hasattr(current, "_set_native_id") and getattr(current, "native_id", None) != threading.get_native_id():
            current._set_native_id()
        me = threading.get_ident()
        for ident in [i for i in labels._BY_THREAD if i != me]:
            labels._forget_thread(ident)
        parent = lifecycle._agent
        if parent is None:
            return
        lifecycle._agent = None
        parent.running = False  # its threads are gone; never join them or reuse its buffers
        _restart(parent)
    except Exception:  # noqa: BLE001 - a fork must never fail because of us
        log.warning("cloudprof: could not restart profiling in the forked child %d", os.getpid(), exc_info=True)


def _restart(parent) -> None:
    from cloudprof.agent import lifecycle

    sampler = parent.sampler
    if sampler is not None:
        sampler.forget_callbacks()  # the parent's: they would fold the child's records into its tables
        if sampler.mode == "signal":
            try:  # the parent's handler is inherited: put SIGPROF back so the new sampler can own it
                signal.setitimer(signal.ITIMER_PROF, 0, 0)
                signal.signal(signal.SIGPROF, sampler._prev_handler or signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    store = parent._store  # an explicit store object is reused; otherwise the child opens its own clients
    agent = lifecycle.Agent(parent.settings, clock=parent.clock, store=store, use_signal=parent._use_signal,
                            spool_dir=parent._spool_dir)
    agent.start()
    lifecycle._agent = agent
    _state["forks"] += 1
    if agent.sampler.mode == "signal":
        agent.sampler.hold_timer()
        threading.Thread(target=_arm_later, args=(agent,), name="cloudprof-fork-arm", daemon=True).start()


class _Anchor:
    """multiprocessing keeps after-fork callbacks in a weak-value dict: this object keeps ours alive."""


_ANCHOR = _Anchor()


def _hook_multiprocessing() -> None:
    """multiprocessing children (fork pools) end with os._exit, skipping atexit, after running multiprocessing's
    finalizers; their registry is cleared in the child just after the fork, then the after-fork callbacks run:
    register one that adds our flush as a finalizer. Only when the app already imported multiprocessing."""
    util = sys.modules.get("multiprocessing.util")
    if util is None or _state.get("mp_hooked"):
        return
    try:
        util.register_after_fork(_ANCHOR, _finalizer_in_child)
        _state["mp_hooked"] = True
    except Exception:  # noqa: BLE001
        log.debug("cloudprof: no multiprocessing after-fork hook", exc_info=True)


def _finalizer_in_child(_anchor) -> None:
    from cloudprof.agent import lifecycle

    if lifecycle._agent is None:
        return
    util = sys.modules["multiprocessing.util"]
    util.Finalize(None, lifecycle.stop, kwargs={"flush": True, "timeout": 5.0}, exitpriority=-100)


def _arm_later(agent) -> None:
    time.sleep(ARM_DELAY_S)
    sampler = agent.sampler
    if agent.running and sampler is not None:
        try:
            sampler.release_timer()
        except (OSError, ValueError):
            sampler.errors += 1
