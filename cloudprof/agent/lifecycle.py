"""Life cycle: the process's one agent, started from settings, flushed at exit and on SIGTERM, stopped cleanly.

`start()` never raises into the app (a bad setting is one log line naming it,
and profiling stays off) unless `strict=True`. With the toggle off nothing is
created: no thread, no signal handler, no storage client.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from cloudprof.agent.clocks import SYSTEM_CLOCK, Clock
from cloudprof.errors import CloudprofError, ConfigError

if TYPE_CHECKING:  # imported when profiling starts: `import cloudprof` stays cheap (no pydantic, no protobuf)
    from cloudprof.agent.sampler import Sampler
    from cloudprof.agent.window import WindowSchedule
    from cloudprof.config import Settings

__all__ = ["Agent", "current", "profiling", "start", "stop"]

log = logging.getLogger("cloudprof")

KIND = "cpu"
AGENT_THREAD_PREFIX = "cloudprof"  # as cloudprof.agent.sampler: threads so named are not sampled
SIGTERM_FLUSH_S = 5.0


class Agent:
    """Sampler + window thread + uploader for one process, built from Settings."""

    def __init__(self, settings: Settings, *, clock: Clock = SYSTEM_CLOCK, store: Any = None,
                 use_signal: bool = True, spool_dir: str | None = None) -> None:
        if not settings.service:
            raise ConfigError("setting service (not set): required when profiling is enabled")
        self.settings = settings
        self.clock = clock
        self.host = socket.gethostname() or "unknown"
        self.pid = os.getpid()
        self.identity = {"service": settings.service, "version": settings.version,
                         "environment": settings.environment, "host": self.host, "pid": str(self.pid)}
        self.seq = 0
        self.windows = 0
        self.build_cpu_ns = 0
        self._store = store
        self._use_signal = use_signal
        self._spool_dir = spool_dir
        self._cut_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.sampler: Sampler | None = None
        self.uploader = None
        self.schedule: WindowSchedule | None = None
        self.watchdog = None
        self.paused = False  # issue 5: set by agent.serverless between invocations
        self.running = False

    def start(self) -> "Agent":
        from cloudprof.agent.sampler import Sampler
        from cloudprof.agent.window import WindowSchedule
        from cloudprof.agent.uploader import Uploader
        from cloudprof.storage import open_store

        store = self._store if self._store is not None else open_store(self.settings.storage)
        self.uploader = Uploader(store, spool_dir=self._spool_dir).start()
        s = self.settings
        self.sampler = Sampler(sample_hz=s.sample_hz, max_depth=s.max_depth, max_overhead_pct=s.max_overhead_pct,
                               use_signal=self._use_signal, thread_timers=s.thread_cpu_timers, clock=self.clock)
        self.schedule = WindowSchedule(self.clock, s.upload_interval_s)
        self._production_hooks()
        self.watchdog.start()  # its rounds run on the sampler's thread, the first one as that thread starts
        self.sampler.start()
        self.running = True
        self._thread = threading.Thread(target=self._run, name=f"{AGENT_THREAD_PREFIX}-windows", daemon=True)
        self._thread.start()
        if self.sampler.reason:
            log.info("cloudprof: sampling with a thread only (%s)", self.sampler.reason)
        return self

    def _production_hooks(self) -> None:
        """issue 5: threads per tick, label cap, fork hooks, safety watchdog (kill file, 10x budget, memory)."""
        from cloudprof.agent import forking, labels
        from cloudprof.agent.safety import Watchdog

        s = self.settings
        self.sampler.picker.max_threads = s.max_threads
        labels.configure(max_values_per_key=s.label_max_values)
        forking.install()
        self.watchdog = Watchdog(self, kill_file=s.kill_switch_file, max_overhead_pct=s.max_overhead_pct,
                                 max_memory_bytes=int(s.max_memory_mb * 1024 * 1024))

    def _run(self) -> None:
        while not self._stop.wait(min(self.schedule.seconds_until_due(self.clock.time_ns()), 3600.0)):
            try:
                self.poll()
            except Exception:  # the app must never see our failure; the next window retries
                log.warning("cloudprof: could not build a profile window", exc_info=True)

    def poll(self) -> bool:
        """Cut and hand over the current window if it is due; True if it was."""
        if self.schedule.due(self.clock.time_ns()):
            self.cut()
            return True
        return False

    def cut(self, final: bool = False) -> str | None:
        """Close the current window now: build its pprof, submit it; the object key, or None if it was empty.

        Empty windows are skipped, except the last one, so a short run still leaves its profile.
        """
        from cloudprof.pprof import encode
        from cloudprof.storage.keys import RawKey

        with self._cut_lock:
            start, end = self.schedule.cut(self.clock.time_ns())
            batch = self.sampler.drain()
            self.windows += 1
            if (not final or self.paused) and not any(len(t) for t in batch.tables):
                return None  # issue 5: a paused (serverless, between invocations) agent has no window to close
            t0 = time.thread_time_ns()
            counters = {"build_cpu_ns": self.build_cpu_ns}
            uploads = self.uploader.counters()
            counters.update({f"upload_{k}": uploads.get(k, 0) for k in ("uploaded", "retried", "spooled", "dropped")})
            counters.update(_production_counters(self))
            from cloudprof.agent.window import build_profile

            profile = build_profile(batch, start, end, self.identity, self.settings.tags, counters)
            data = encode(profile)
            key = RawKey.for_window(self.settings.service, KIND, self.host, self.pid, start // 1_000_000,
                                    self.seq).build()
            self.seq += 1
            self.uploader.submit(key, data, metadata=self.identity)
            self.build_cpu_ns += time.thread_time_ns() - t0
            return key

    def stop(self, flush: bool = True, timeout: float = 5.0) -> bool:
        """Stop sampling; with flush, upload the last partial window within `timeout`. True if all was delivered."""
        if not self.running:
            return True
        self.running = False
        deadline = time.monotonic() + timeout
        self._stop.set()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.sampler.stop()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, deadline - time.monotonic()))
        if flush:
            try:
                self.cut(final=True)
            except Exception:
                log.warning("cloudprof: could not build the last profile window", exc_info=True)
        return bool(self.uploader.close(max(0.1, deadline - time.monotonic()) if flush else 0.1))


def _production_counters(agent: Agent) -> dict[str, object]:
    """issue 5: agent memory, safety state, label folding and forks, for each profile's comments."""
    from cloudprof.agent import forking, labels, safety

    out = safety.counters(agent)
    out.update(labels.counters())
    out["forks"] = forking.forks_seen()
    return out


# --- the process's agent ---------------------------------------------------------

_lock = threading.RLock()
_agent: Agent | None = None
_atexit_registered = False
_prev_sigterm: Any = None
_sigterm_installed = False


def current() -> Agent | None:
    """The running agent, if any."""
    return _agent


def start(*, config: Mapping[str, Any] | None = None, strict: bool = False, **overrides: Any) -> bool:
    """Start profiling if the settings enable it; True if an agent is running afterwards.

    Settings come from `overrides` > `config` (the app's own mapping) > CLOUDPROF_* >
    cloudprof.toml / [tool.cloudprof] > defaults. A second call while running is a no-op.
    """
    global _agent
    with _lock:
        if _agent is not None:
            return True
        try:
            from cloudprof.config import load_settings, mentions_enabled

            if not strict and not mentions_enabled(overrides, config):
                log.debug("cloudprof: profiling is off (enabled is not set)")
                return False
            settings = load_settings(overrides, config)
            if not settings.enabled:
                log.debug("cloudprof: profiling is off (enabled=false)")
                return False
            agent = Agent(settings).start()
        except CloudprofError as exc:
            if strict:
                raise
            log.error("cloudprof: %s; profiling is off", exc)
            return False
        except Exception as exc:
            if strict:
                raise ConfigError(f"cannot start profiling: {type(exc).__name__}: {exc}") from exc
            log.error("cloudprof: cannot start profiling (%s: %s); profiling is off", type(exc).__name__, exc)
            return False
        _agent = agent
        _install_exit_hooks()
        return True


def stop(flush: bool = True, timeout: float = 5.0) -> bool:
    """Stop profiling; with flush, upload what was sampled within `timeout` seconds. Never raises."""
    global _agent
    with _lock:
        agent, _agent = _agent, None
        if agent is None:
            return True
        _remove_sigterm_handler()
        try:
            return agent.stop(flush=flush, timeout=timeout)
        except Exception:
            log.warning("cloudprof: error while stopping", exc_info=True)
            return False


@contextlib.contextmanager
def profiling(*, config: Mapping[str, Any] | None = None, strict: bool = False,
              flush: bool = True, timeout: float = 5.0, **overrides: Any) -> Iterator[bool]:
    """`with cloudprof.profiling(service=...):` profile a block; yields whether profiling is on."""
    overrides.setdefault("enabled", True)
    was_running = _agent is not None
    on = start(config=config, strict=strict, **overrides)
    try:
        yield on
    finally:
        if on and not was_running:
            stop(flush=flush, timeout=timeout)


def _at_exit() -> None:
    stop(flush=True, timeout=5.0)


def _on_sigterm(signum: int, frame: Any) -> None:
    prev = _prev_sigterm
    stop(flush=True, timeout=SIGTERM_FLUSH_S)
    if callable(prev):
        prev(signum, frame)
    elif prev == signal.SIG_IGN:
        return
    else:  # SIG_DFL (or a handler not set from Python): die of SIGTERM as the app would have
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


def _install_exit_hooks() -> None:
    global _atexit_registered, _prev_sigterm, _sigterm_installed
    if not _atexit_registered:
        atexit.register(_at_exit)
        _atexit_registered = True
    if _sigterm_installed or threading.current_thread() is not threading.main_thread():
        return
    try:
        prev = signal.getsignal(signal.SIGTERM)
        if prev is None:
            return  # installed outside Python: we cannot chain it, so leave it alone
        _prev_sigterm = prev
        signal.signal(signal.SIGTERM, _on_sigterm)
        _sigterm_installed = True
    except (ValueError, OSError, AttributeError):
        pass


def _remove_sigterm_handler() -> None:
    global _sigterm_installed
    if not _sigterm_installed:
        return
    try:
        if signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, _prev_sigterm)
            _sigterm_installed = False
    except (ValueError, OSError):
        pass  # not the main thread; the handler stays and only chains
