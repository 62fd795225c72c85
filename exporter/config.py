"""Configuration: one `Settings` object, read from `PERFPULSE_*` environment variables."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "PERFPULSE_"

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """Raised when the configuration is invalid; the message names each bad variable."""


class Settings(BaseSettings):
    """Everything perfpulse can be told; each field is the variable `PERFPULSE_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    sampling_interval_seconds: float = Field(
        5.0, ge=0.1, le=3600, description="Seconds between two snapshots."
    )
    collector_timeout_seconds: float | None = Field(
        None,
        gt=0,
        description="Deadline of one collector in one tick (default: half the interval).",
    )
    host: str = Field("0.0.0.0", min_length=1, description="Address the HTTP server binds.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    log_level: LogLevel = Field("info", description="debug, info, warning, error or critical.")
    hostname: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        description="Host name written into every snapshot (default: this machine's).",
    )
    proc_root: Path = Field(Path("/proc"), description="Where procfs is mounted.")
    sys_root: Path = Field(Path("/sys"), description="Where sysfs is mounted.")
    rootfs: Path = Field(
        Path("/"), description="Where the host's root filesystem is visible (for statvfs)."
    )

    @model_validator(mode="after")
    def _timeout_within_interval(self) -> Settings:
        timeout = self.collector_timeout_seconds
        if timeout is not None and timeout > self.sampling_interval_seconds:
            raise ValueError(
                "PERFPULSE_COLLECTOR_TIMEOUT_SECONDS must not exceed "
                "PERFPULSE_SAMPLING_INTERVAL_SECONDS"
            )
        return self

    @property
    def collector_deadline(self) -> float:
        """Seconds one collector may take before its result is reported as timed out."""
        if self.collector_timeout_seconds is not None:
            return self.collector_timeout_seconds
        return self.sampling_interval_seconds / 2


def load_settings(**overrides: object) -> Settings:
    """Build `Settings` from the environment plus explicit overrides (CLI flags).

    A validation failure becomes a `ConfigError` whose message names the variable.
    """
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the environment variable."""
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"])
        name = f"{ENV_PREFIX}{field.upper()}" if field else "configuration"
        value = error.get("input")
        shown = "" if field == "" or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{name}: {error['msg']}{shown}")
    return "invalid configuration: " + "; ".join(lines)
