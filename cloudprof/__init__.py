"""cloudprof: always-on profiling for Python services, built on object storage.

    import cloudprof
    cloudprof.start(service="checkout")      # on only when enabled (CLOUDPROF_ENABLED=1, enabled=True, ...)
    with cloudprof.profiling(service="batch"): ...
"""

__version__ = "0.1.0"

from cloudprof.agent import profiling, start, stop  # noqa: E402
from cloudprof.agent.labels import labels  # noqa: E402
from cloudprof.errors import ConfigError  # noqa: E402

__all__ = ["ConfigError", "__version__", "labels", "profiling", "start", "stop"]
