"""Settings: the toggle and every knob of the agent, from every source, in one place.

Sources, highest first: keyword arguments, the app's own config mapping (Flask
`app.config["CLOUDPROF"]`, Django `settings.CLOUDPROF`), `CLOUDPROF_*` environment,
`cloudprof.toml` then `[tool.cloudprof]` in pyproject.toml (current directory), defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any, Mapping

from cloudprof.errors import ConfigError

__all__ = ["ENV_PREFIX", "Settings", "load_settings", "mentions_enabled", "run_environment"]

ENV_PREFIX = "CLOUDPROF_"


def _toml_values(directory: Path) -> tuple[dict[str, Any], dict[str, str]]:
    """`cloudprof.toml` (top-level keys) over `[tool.cloudprof]` of pyproject.toml, in one directory: values, origins."""
    values: dict[str, Any] = {}
    origin: dict[str, str] = {}
    for name, pick in (("pyproject.toml", lambda d: d.get("tool", {}).get("cloudprof", {})),
                       ("cloudprof.toml", lambda d: d)):
        path = directory / name
        if not path.is_file():
            continue
        table = pick(_read_toml(path))
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: the cloudprof table is not a table")
        for key, value in table.items():
            key = str(key).lower().replace("-", "_")
            values[key] = value
            origin[key] = str(path)
    return values, origin


def _read_toml(path: Path) -> dict:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return {}
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{path}: cannot read TOML: {exc}") from None


_model: type | None = None


def _settings_model() -> type:
    """The pydantic model, defined on first use: pydantic costs ~100 ms to import, which a process whose
    profiling is off (see `mentions_enabled`) never pays."""
    global _model
    if _model is not None:
        return _model
    from pydantic import Field, field_validator, model_validator
    from pydantic.fields import FieldInfo
    from pydantic_settings import BaseSettings, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

    class _TomlSource(PydanticBaseSettingsSource):
        def __init__(self, settings_cls: type[BaseSettings], directory: Path) -> None:
            super().__init__(settings_cls)
            self.values, self.origin = _toml_values(directory)

        def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
            return self.values.get(field_name), field_name, False

        def __call__(self) -> dict[str, Any]:
            return dict(self.values)

    class Settings(BaseSettings):
        """Every knob of the agent; see DESIGN "Configuration: the toggle"."""

        model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True,
                                          case_sensitive=False, frozen=True)

        enabled: bool = False
        service: str | None = None
        storage: str = "file://.cloudprof"
        sample_hz: float = Field(100.0, gt=0, le=1000)
        upload_interval_s: float = Field(60.0, ge=1, le=3600)
        max_overhead_pct: float = Field(1.0, gt=0, le=100)
        max_depth: int = Field(128, ge=1, le=4096)
        version: str = ""
        environment: str = ""
        # issue 5 (production): threads per tick, label cardinality, safety switches
        max_threads: int = Field(64, ge=1, le=100_000)
        thread_cpu_timers: bool = True  # other threads' CPU samples from per-thread CPU timers (agent/_threadcpu.c)
        label_max_values: int = Field(100, ge=1, le=100_000)
        kill_switch_file: str = "/tmp/cloudprof.kill"
        max_memory_mb: float = Field(128.0, gt=0)
        # the aggregator's scheduled run: how many past hours it scans for pending partitions
        aggregate_lookback_hours: int = Field(3, ge=1, le=24 * 31)
        tags: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

        @field_validator("tags", mode="before")
        @classmethod
        def _parse_tags(cls, value: Any) -> Any:
            if isinstance(value, str):
                tags = {}
                for item in filter(None, (part.strip() for part in value.split(","))):
                    key, sep, val = item.partition("=")
                    if not sep or not key.strip():
                        raise ValueError(f"expected k=v,k=v, got {item!r}")
                    tags[key.strip()] = val.strip()
                return tags
            return value

        @field_validator("storage")
        @classmethod
        def _storage_url(cls, value: str) -> str:
            scheme, sep, rest = value.partition("://")
            if not sep or scheme not in ("file", "s3", "gs", "memory") or not rest:
                raise ValueError("expected file://path, s3://bucket/prefix, gs://bucket/prefix or memory://name")
            return value

        @field_validator("service")
        @classmethod
        def _service_name(cls, value: str | None) -> str | None:
            if value is None or value == "":
                return None
            from cloudprof.storage.keys import validate_service

            try:
                validate_service(value)
            except (ConfigError, ValueError) as exc:
                raise ValueError(str(exc)) from None
            return value

        @model_validator(mode="after")
        def _service_when_enabled(self) -> "Settings":
            if self.enabled and not self.service:
                raise ValueError("service: required when profiling is enabled")
            return self

        @classmethod
        def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                       file_secret_settings):
            return (init_settings, env_settings, _TomlSource(settings_cls, Path.cwd()))

    Settings.__qualname__ = "Settings"
    _model = Settings
    return Settings


def __getattr__(name: str) -> Any:
    if name == "Settings":
        return _settings_model()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def mentions_enabled(overrides: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> bool:
    """Whether any source sets `enabled` at all; if none does, profiling is off (the default) and no model is built."""
    env = ENV_PREFIX + "ENABLED"
    if "enabled" in _normalise(overrides, "arguments") or "enabled" in _normalise(config, "config"):
        return True
    if any(k.upper() == env for k in os.environ):
        return True
    try:
        return "enabled" in _toml_values(Path.cwd())[0]
    except ConfigError:
        return True  # let the full load report it


def _normalise(mapping: Mapping[str, Any] | None, what: str) -> dict[str, Any]:
    if mapping is None:
        return {}
    if not isinstance(mapping, Mapping):
        raise ConfigError(f"{what}: expected a mapping of settings, got {type(mapping).__name__}")
    return {str(k).lower(): v for k, v in mapping.items()}


def load_settings(overrides: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None) -> Settings:
    """Settings from every source, or ConfigError whose message names the bad setting and where it came from."""
    kwargs = _normalise(overrides, "arguments")
    mapping = _normalise(config, "config")
    Settings = _settings_model()  # noqa: N806
    from pydantic import ValidationError

    try:
        return Settings(**{**mapping, **kwargs})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(part) for part in err.get("loc", ()) if str(part) != "__root__"]
        msg = err.get("msg", "invalid").removeprefix("Value error, ")
        name = loc[0] if loc else msg.split(":", 1)[0]
        if not loc and ":" in msg:
            msg = msg.split(":", 1)[1].strip()
        source = _origin(name, kwargs, mapping, Settings.model_fields)
        if err.get("type") == "extra_forbidden":
            msg = f"unknown setting; known: {', '.join(Settings.model_fields)}"
        shown = f"={err['input']!r}" if loc and "input" in err and not isinstance(err["input"], dict) else ""
        raise ConfigError(f"setting {name}{shown} ({source}): {msg}") from None
    except ConfigError:
        raise
    except Exception as exc:  # pydantic-settings' own parse errors (SettingsError)
        raise ConfigError(f"settings: {exc}") from None


def _origin(name: str, kwargs: Mapping, mapping: Mapping, fields: Mapping) -> str:
    if name in kwargs:
        return "argument"
    if name in mapping:
        return "config mapping"
    env = ENV_PREFIX + name.upper()
    if any(k.upper() == env for k in os.environ):
        return f"environment {env}"
    try:
        origin = _toml_values(Path.cwd())[1]
        if name in origin:
            return origin[name]
    except ConfigError:
        pass
    return "not set" if name in fields else "unknown"


def run_environment(bootstrap_dir: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """This process's environment for a child to profile: CLOUDPROF_* set, the bootstrap dir first on PYTHONPATH."""
    env = dict(os.environ)
    for name, value in settings.items():
        env[ENV_PREFIX + name.upper()] = str(value)
    # Only read by the bootstrap when the child's Python cannot import cloudprof itself.
    package_root = str(Path(__file__).resolve().parent.parent)
    env["CLOUDPROF_BOOTSTRAP_PATH"] = os.pathsep.join([package_root] + [p for p in sys.path if "-packages" in p])
    path = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = str(bootstrap_dir) + (os.pathsep + path if path else "")
    return env
