"""Serverless (AWS Lambda, Cloud Run, Cloud Functions): profile during invocations, flush before the freeze.

Between invocations the platform freezes the process (Lambda: no CPU, no
threads, for seconds to hours). The `handler` decorator therefore starts the
agent on the first invocation, and around every invocation resumes sampling at
the start (a fresh window beginning now), and at the end cuts the window and
waits (bounded) for its upload before returning: the platform may freeze us the
moment the handler returns, and frozen time never lands in any window because
nothing samples between invocations.

Service and version come from the platform when the settings do not name them
(explicit settings and CLOUDPROF_* win): Lambda's AWS_LAMBDA_FUNCTION_NAME /
AWS_LAMBDA_FUNCTION_VERSION, Cloud Run's and Cloud Functions (2nd gen)'s
K_SERVICE / K_REVISION, Cloud Functions (1st gen)'s FUNCTION_NAME /
X_GOOGLE_FUNCTION_VERSION, Cloud Run jobs' CLOUD_RUN_JOB / CLOUD_RUN_EXECUTION.
Profiling is still off unless enabled (CLOUDPROF_ENABLED=1, or enabled=True).
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import re
import threading
from typing import Any, Callable, Mapping

__all__ = ["FLUSH_TIMEOUT_S", "begin_invocation", "end_invocation", "handler", "platform", "platform_settings"]

FLUSH_TIMEOUT_S = 2.0
log = logging.getLogger("cloudprof")

# platform -> (marker variable, service variables, version variables, extra tags)
_PLATFORMS = (
    ("aws-lambda", "AWS_LAMBDA_FUNCTION_NAME", ("AWS_LAMBDA_FUNCTION_NAME",), ("AWS_LAMBDA_FUNCTION_VERSION",),
     {"region": "AWS_REGION", "memory_mb": "AWS_LAMBDA_FUNCTION_MEMORY_SIZE"}),
    ("cloud-run-job", "CLOUD_RUN_JOB", ("CLOUD_RUN_JOB",), ("CLOUD_RUN_EXECUTION",), {}),
    ("cloud-functions", "FUNCTION_TARGET", ("K_SERVICE", "FUNCTION_NAME"), ("K_REVISION", "X_GOOGLE_FUNCTION_VERSION"),
     {"target": "FUNCTION_TARGET"}),
    ("cloud-run", "K_SERVICE", ("K_SERVICE",), ("K_REVISION",), {"configuration": "K_CONFIGURATION"}),
    ("cloud-functions", "FUNCTION_NAME", ("FUNCTION_NAME",), ("X_GOOGLE_FUNCTION_VERSION",), {}),
)
_lock = threading.Lock()


def platform(environ: Mapping[str, str] | None = None) -> str:
    """"aws-lambda", "cloud-run", "cloud-run-job", "cloud-functions", or "" when not serverless."""
    env = os.environ if environ is None else environ
    for name, marker, *_ in _PLATFORMS:
        if env.get(marker):
            return name
    return ""


def _service_name(raw: str) -> str:
    """A platform name made valid for DESIGN's service rule ([a-z0-9][a-z0-9._-]{0,62})."""
    name = re.sub(r"[^a-z0-9._-]+", "-", raw.lower()).strip("-._")
    return name[:63] or "function"


def platform_settings(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Service, version, environment and tags the platform tells us (empty when not serverless)."""
    env = os.environ if environ is None else environ
    for name, marker, services, versions, tags in _PLATFORMS:
        if not env.get(marker):
            continue
        out: dict[str, Any] = {"environment": name}
        service = next((env[v] for v in services if env.get(v)), "")
        if service:
            out["service"] = _service_name(service)
        version = next((env[v] for v in versions if env.get(v)), "")
        if version:
            out["version"] = version
        found = {tag: env[var] for tag, var in tags.items() if env.get(var)}
        if found:
            out["tags"] = found
        return out
    return {}


def _settings_with_platform(overrides: Mapping[str, Any], environ: Mapping[str, str] | None) -> dict[str, Any]:
    """`overrides` plus the platform's names for whatever no other source sets."""
    from cloudprof.config import load_settings

    plat = platform_settings(environ)
    if not plat:
        return dict(overrides)
    probe = load_settings({**overrides, "enabled": False})  # every source, without the service requirement
    out = dict(overrides)
    for key in ("service", "version", "environment"):
        if key in plat and key not in out and not getattr(probe, key):
            out[key] = plat[key]
    if "tags" in plat and "tags" not in out:
        out["tags"] = {**plat["tags"], **probe.tags}
    return out


def begin_invocation(agent) -> None:
    """Resume sampling for an invocation: a new window starting now, nothing carried over from before the freeze."""
    from cloudprof.agent.window import WindowSchedule

    sampler = agent.sampler
    if sampler is None:
        return
    if not sampler._active:
        sampler.start()
    sampler.drain()  # whatever the sampler saw between invocations is dropped
    agent.schedule = WindowSchedule(agent.clock, agent.settings.upload_interval_s)
    sampler._last_tick = sampler.clock.monotonic_ns()  # wall is counted from the window's start, not start()'s
    agent.paused = False


def end_invocation(agent, timeout: float = FLUSH_TIMEOUT_S) -> bool:
    """Cut the invocation's window, upload it within `timeout`, and stop sampling until the next one."""
    try:
        if agent.sampler is not None:
            agent.sampler.stop()  # first: stopping records the main thread's CPU since its last signal
        agent.cut(final=True)
    finally:
        agent.paused = True  # no window until the next invocation, so none can span a freeze
    return bool(agent.uploader.flush(timeout)) if agent.uploader is not None else True


def _agent_for_invocation(overrides: Mapping[str, Any], environ: Mapping[str, str] | None):
    from cloudprof.agent import lifecycle

    agent = lifecycle.current()
    if agent is not None:
        return agent
    with _lock:
        agent = lifecycle.current()
        if agent is None:
            try:
                settings = _settings_with_platform(overrides, environ)
            except Exception as exc:  # noqa: BLE001 - a bad setting is logged by start(); we must not raise
                log.error("cloudprof: %s; profiling is off", exc)
                return None
            if lifecycle.start(**settings):
                agent = lifecycle.current()
    return agent


def handler(func: Callable | None = None, *, flush_timeout: float = FLUSH_TIMEOUT_S,
            environ: Mapping[str, str] | None = None, **overrides: Any):
    """Decorate a Lambda / Cloud Functions handler: `@cloudprof.serverless.handler` or `@handler(service=...)`.

    Works for plain and `async def` handlers. Never raises into the handler's caller
    because of profiling; the handler's own exceptions pass through unchanged.
    """
    if func is None:
        return functools.partial(handler, flush_timeout=flush_timeout, environ=environ, **overrides)

    if inspect.iscoroutinefunction(func):
        @functools.wraps(func)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            agent = _begin(overrides, environ)
            try:
                return await func(*args, **kwargs)
            finally:
                _end(agent, flush_timeout)

        return async_wrapper

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        agent = _begin(overrides, environ)
        try:
            return func(*args, **kwargs)
        finally:
            _end(agent, flush_timeout)

    return wrapper


def _begin(overrides, environ):
    try:
        agent = _agent_for_invocation(overrides, environ)
        if agent is not None and agent.running:
            begin_invocation(agent)
        return agent
    except Exception:  # noqa: BLE001
        log.warning("cloudprof: could not resume profiling for this invocation", exc_info=True)
        return None


def _end(agent, timeout):
    if agent is None or not agent.running:
        return
    try:
        if not end_invocation(agent, timeout):
            log.warning("cloudprof: the invocation's profile was not uploaded within %.1fs", timeout)
    except Exception:  # noqa: BLE001
        log.warning("cloudprof: could not flush this invocation's profile", exc_info=True)
