"""The in-process agent: samplers, windows, uploader, life cycle."""

from cloudprof.agent.lifecycle import Agent, current, profiling, start, stop

__all__ = ["Agent", "current", "profiling", "start", "stop"]
