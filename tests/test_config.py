from __future__ import annotations

import subprocess
import sys

import pytest

from exporter.config import ConfigError, load_settings


def test_defaults():
    settings = load_settings()
    assert settings.sampling_interval_seconds == 5.0
    assert settings.collector_deadline == 2.5
    assert (settings.host, settings.port, settings.log_level) == ("0.0.0.0", 8000, "info")


def test_environment_and_fractions(monkeypatch):
    monkeypatch.setenv("PERFPULSE_SAMPLING_INTERVAL_SECONDS", "0.1")
    monkeypatch.setenv("PERFPULSE_PORT", "9100")
    settings = load_settings()
    assert settings.sampling_interval_seconds == 0.1
    assert settings.collector_deadline == pytest.approx(0.05)
    assert settings.port == 9100


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PERFPULSE_SAMPLING_INTERVAL_SECONDS", "0.05"),
        ("PERFPULSE_SAMPLING_INTERVAL_SECONDS", "fast"),
        ("PERFPULSE_PORT", "70000"),
        ("PERFPULSE_LOG_LEVEL", "chatty"),
    ],
)
def test_invalid_value_names_the_variable(monkeypatch, variable, value):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert variable in str(caught.value)
    assert repr(value) in str(caught.value)


def test_timeout_longer_than_interval_is_refused():
    with pytest.raises(ConfigError, match="PERFPULSE_COLLECTOR_TIMEOUT_SECONDS"):
        load_settings(sampling_interval_seconds=1, collector_timeout_seconds=2)


def test_cli_fails_at_start_with_one_clear_line():
    result = subprocess.run(
        [sys.executable, "-m", "exporter", "serve", "--interval", "0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "perfpulse: invalid configuration: PERFPULSE_SAMPLING_INTERVAL_SECONDS: "
        "Input should be greater than or equal to 0.1 (got 0.0)"
    ]


def test_an_empty_variable_means_the_default(monkeypatch):
    """`PERFPULSE_DASHBOARD_DIR=` is unset, not the working directory; likewise for every
    setting (pydantic-settings' env_ignore_empty)."""
    from exporter.config import Settings

    defaults = load_settings()
    for name in Settings.model_fields:
        monkeypatch.setenv(f"PERFPULSE_{name.upper()}", "")
    settings = load_settings()
    for name in Settings.model_fields:
        assert getattr(settings, name) == getattr(defaults, name), name
    assert settings.dashboard_dir is None
