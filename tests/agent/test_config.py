"""Settings: every source in DESIGN's order, and errors that name the setting and where it came from."""

from __future__ import annotations

import pytest

from cloudprof.config import Settings, load_settings
from cloudprof.errors import ConfigError


def write(path, text):
    path.write_text(text)
    return path


def test_defaults_are_off():
    s = load_settings()
    assert s.enabled is False and s.service is None
    assert (s.storage, s.sample_hz, s.upload_interval_s, s.max_overhead_pct, s.max_depth) == (
        "file://.cloudprof", 100.0, 60.0, 1.0, 128)
    assert (s.version, s.environment, s.tags) == ("", "", {})


def test_precedence_kwargs_over_mapping_over_env_over_toml_over_pyproject(tmp_path, monkeypatch):
    write(tmp_path / "pyproject.toml", '[tool.cloudprof]\nservice = "from-pyproject"\nsample_hz = 11\n'
                                       'version = "py"\nenvironment = "py"\nmax_depth = 11\n')
    write(tmp_path / "cloudprof.toml", 'sample_hz = 22\nversion = "toml"\nenvironment = "toml"\n')
    monkeypatch.setenv("CLOUDPROF_VERSION", "env")
    monkeypatch.setenv("CLOUDPROF_ENVIRONMENT", "env")
    monkeypatch.setenv("CLOUDPROF_UPLOAD_INTERVAL_S", "33")
    s = load_settings({"environment": "kwarg"}, {"ENVIRONMENT": "mapping", "UPLOAD_INTERVAL_S": 44})
    assert s.max_depth == 11  # only pyproject sets it
    assert s.service == "from-pyproject"
    assert s.sample_hz == 22  # cloudprof.toml beats pyproject
    assert s.version == "env"  # env beats both files
    assert s.upload_interval_s == 44  # the app's mapping beats env
    assert s.environment == "kwarg"  # arguments beat everything


def test_env_values_are_parsed(monkeypatch):
    monkeypatch.setenv("CLOUDPROF_ENABLED", "1")
    monkeypatch.setenv("CLOUDPROF_SERVICE", "checkout")
    monkeypatch.setenv("CLOUDPROF_TAGS", "team=payments, region=eu-west-1")
    monkeypatch.setenv("CLOUDPROF_STORAGE", "s3://bucket/prefix")
    s = load_settings()
    assert s.enabled and s.service == "checkout" and s.storage == "s3://bucket/prefix"
    assert s.tags == {"team": "payments", "region": "eu-west-1"}


@pytest.mark.parametrize("overrides,env,needle", [
    ({"sample_hz": "fast"}, {}, "setting sample_hz='fast' (argument)"),
    ({"sample_hz": 0}, {}, "setting sample_hz=0 (argument)"),
    ({}, {"CLOUDPROF_MAX_OVERHEAD_PCT": "-1"}, "setting max_overhead_pct='-1' (environment CLOUDPROF_MAX_OVERHEAD_PCT)"),
    ({"enabled": True}, {}, "setting service (not set): required"),
    ({"service": "Checkout Service"}, {}, "setting service='Checkout Service' (argument)"),
    ({"storage": "ftp://host/x"}, {}, "setting storage='ftp://host/x' (argument)"),
    ({"smaple_hz": 10}, {}, "setting smaple_hz=10 (argument): unknown setting"),
    ({}, {"CLOUDPROF_TAGS": "nokey"}, "setting tags='nokey' (environment CLOUDPROF_TAGS)"),
], ids=["not-a-number", "zero-rate", "negative-budget-env", "service-missing", "service-rule", "storage-scheme",
        "typo", "tags-format"])
def test_bad_settings_name_the_setting_and_source(monkeypatch, overrides, env, needle):
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError) as info:
        load_settings(overrides)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_toml_names_the_file(tmp_path):
    write(tmp_path / "cloudprof.toml", "sample_hz = = 3\n")
    with pytest.raises(ConfigError, match="cloudprof.toml"):
        load_settings()
    write(tmp_path / "cloudprof.toml", "sample_hz = 0\n")
    with pytest.raises(ConfigError, match=r"sample_hz=0 \(.*cloudprof.toml\)"):
        load_settings()


def test_settings_are_frozen():
    s = Settings()
    with pytest.raises(Exception):
        s.sample_hz = 3  # type: ignore[misc]
