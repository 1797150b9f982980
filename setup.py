"""The one compiled part: per-thread CPU timers for the agent (cloudprof/agent/_threadcpu.c).

Optional: where it cannot be built (no compiler, not Linux, another CPython), the
agent samples other threads from its sampler thread and says so in each profile.
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("cloudprof.agent._threadcpu", ["cloudprof/agent/_threadcpu.c"], optional=True)])
