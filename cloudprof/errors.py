"""The one exception tree of cloudprof.

    CloudprofError
     +-- ConfigError            a setting is missing or has a bad value
     +-- ProfileError           bytes that are not a valid pprof profile
     |    +-- IncompatibleProfiles   profiles whose sample types cannot merge
     +-- StorageError           object storage failed
          +-- NotFound
          +-- PreconditionFailed     a conditional write lost its race
          +-- AccessDenied
          +-- StorageUnavailable     network, throttling, 5xx: worth retrying

The agent logs these and carries on; serverless handlers raise so the platform
retries; the CLI prints one line and exits 1.
"""

__all__ = [
    "AccessDenied",
    "CloudprofError",
    "ConfigError",
    "IncompatibleProfiles",
    "NotFound",
    "PreconditionFailed",
    "ProfileError",
    "StorageError",
    "StorageUnavailable",
]


class CloudprofError(Exception):
    """Base of every error cloudprof raises on purpose."""


class ConfigError(CloudprofError):
    """A setting is missing or invalid; the message names the setting."""


class ProfileError(CloudprofError):
    """Bytes that are not a valid pprof profile; the message says why."""


class IncompatibleProfiles(ProfileError):
    """Profiles whose period or sample types differ cannot be merged."""


class StorageError(CloudprofError):
    """Object storage failed; the message names the object and the operation."""


class NotFound(StorageError):
    pass


class PreconditionFailed(StorageError):
    pass


class AccessDenied(StorageError):
    pass


class StorageUnavailable(StorageError):
    pass
