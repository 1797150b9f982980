"""cloudprof: always-on profiling for Python services, built on object storage."""

__version__ = "0.1.0"

__all__ = ["__version__"]
