"""Configuration: one `Settings` object, read from `PERFPULSE_*` environment variables."""

from __future__ import annotations

import ipaddress
import re
import socket
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from exporter.spec import COLLECTOR_NAMES, HARDWARE_EVENTS, SOFTWARE_EVENTS

ENV_PREFIX = "PERFPULSE_"

MIN_SECRET_BYTES = 32

LogLevel = Literal["debug", "info", "warning", "error", "critical"]


class ConfigError(Exception):
    """Raised when the configuration is invalid; the message names each bad variable."""


class CommandError(Exception):
    """A command could not do what was asked; the message says why."""


class StartError(Exception):
    """perfpulse cannot start as configured (port taken, data directory in use)."""


class Settings(BaseSettings):
    """Everything perfpulse can be told; each field is the variable `PERFPULSE_<NAME>`."""

    # An empty variable (`PERFPULSE_DASHBOARD_DIR=`) means the default, not an empty value.
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="ignore", frozen=True, env_ignore_empty=True
    )

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

    dashboard_dir: Path | None = Field(
        None, description="The built dashboard (default: the one inside the package)."
    )
    web_config_file: Path | None = Field(
        None,
        description="exporter-toolkit web config: TLS for the server, basic auth for /metrics.",
    )
    collectors: str = Field(
        "cpu,memory,network,disk,perf_events,memory_bandwidth,processes,cgroups",
        min_length=1,
        description="Comma-separated collectors to run; a section left out says so "
        "(`available: false`).",
    )
    processes_top: int = Field(
        10,
        ge=1,
        le=1000,
        description="Processes shown per measure (CPU, memory, disk I/O): the snapshot's "
        "`top` is the union of the three.",
    )
    processes_scan_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="Seconds between two reads of the whole process table and cgroup "
        "tree (the busiest processes and groups are read every tick, and the table at once "
        "when CPU, memory or disk I/O goes unexplained).",
    )
    process_groups_max: int = Field(
        100,
        ge=1,
        le=100_000,
        description="Process names exported as perfpulse_process_group_* series.",
    )
    cgroups_max: int = Field(
        200,
        ge=1,
        le=100_000,
        description="Groups (services, containers, pods, slices) in the snapshot and "
        "/metrics, the busiest first.",
    )
    perf_enabled: bool = Field(True, description="Run the perf child for hardware counters.")
    perf_binary: str = Field("perf", min_length=1, description="The perf executable.")
    perf_events: str = Field(
        ",".join(HARDWARE_EVENTS + SOFTWARE_EVENTS),
        min_length=1,
        description="Comma-separated perf events.",
    )

    data_dir: Path = Field(
        default_factory=lambda: Path(platformdirs.user_data_dir("perfpulse")),
        description="Embedded PostgreSQL, generated JWT secret, initial admin password.",
    )
    database_url: SecretStr | None = Field(
        None, description="PostgreSQL URL; unset means an embedded server in the data dir."
    )
    database_pool_size: int | None = Field(
        None,
        ge=1,
        le=100,
        description="Most pooled connections (default: 10, or 2 for an agent whose "
        "dashboard is off).",
    )
    database_listen_url: SecretStr | None = Field(
        None,
        description="A direct PostgreSQL URL (not through PgBouncer) for LISTEN, which "
        "relays the fleet's snapshots to this dashboard (default: the main URL).",
    )
    database_relay_url: SecretStr | None = Field(
        None,
        description="Where the live relay publishes each tick (default: the main URL). "
        "Through PgBouncer, a database entry with a pool of its own, so that a tick's "
        "publish never queues behind write batches (docs/fleet.md).",
    )
    database_transaction_pooling: bool = Field(
        False,
        description="The main URL goes through a transaction-mode pooler (PgBouncer): no "
        "prepared-statement cache, every statement in a transaction.",
    )
    collect: bool = Field(
        True,
        description="Sample this host; off for a dashboard-only instance that shows the "
        "fleet without reporting itself.",
    )
    dashboard: bool = Field(
        True,
        description="Serve the dashboard, login, stream and history; off for an agent that "
        "only collects, writes and serves /metrics.",
    )

    jwt_secret: SecretStr | None = Field(
        None, description="HS256 key, at least 32 bytes; unset means generated once and kept."
    )
    access_token_expire_minutes: int = Field(
        60, ge=1, le=7 * 24 * 60, description="Lifetime of an access token."
    )
    login_max_failures: int = Field(
        5, ge=1, le=1000, description="Failed logins from one client before it must wait."
    )
    login_failure_window_seconds: float = Field(
        300, gt=0, le=86400, description="Window in which failed logins are counted."
    )
    login_account_max_failures: int = Field(
        20,
        ge=1,
        le=100_000,
        description="Failed logins to one account, from any address, before it must wait.",
    )
    login_queue_size: int = Field(
        8, ge=1, le=1000, description="Logins waiting for a password check; more get a 503."
    )
    trusted_proxies: str = Field(
        "",
        description="Comma-separated proxy addresses whose X-Forwarded-For is believed "
        "(none by default: the peer's own address is the client).",
    )
    max_body_bytes: int = Field(
        16 * 1024, ge=1024, le=1 << 24, description="Largest request body (413 above it)."
    )
    max_connections: int | None = Field(
        None,
        ge=16,
        le=1_000_000,
        description="Open connections served at once; more are refused with a 503 "
        "(default: from the open-file limit, at most 16,384).",
    )
    max_connections_per_client: int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description="Open connections from one client address (an IPv6 /64); more are "
        "refused with a 503; trusted proxies are exempt (default: an eighth of "
        "PERFPULSE_MAX_CONNECTIONS, at least 64).",
    )
    request_header_timeout_seconds: float = Field(
        5, gt=0, le=300, description="A connection must send its request headers within this."
    )
    request_body_timeout_seconds: float = Field(
        10,
        gt=0,
        le=300,
        description="A request's body must arrive within this of its headers (408 after).",
    )
    allowed_hosts: str = Field(
        "",
        description="Comma-separated names the server may be reached by (the Host header), "
        "besides IP addresses, localhost and this machine's names; `.example.com` or "
        "`*.example.com` for a domain and its subdomains, `*` for any. Others get a 400.",
    )
    session_recheck_seconds: float = Field(
        30,
        gt=0,
        le=3600,
        description="How often open streams are re-checked against their users and tokens "
        "(deleted, password or access changed, token revoked or expired).",
    )
    auth_proxy_header: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="A header naming the logged-in user, set by a single sign-on proxy in "
        "front (oauth2-proxy, an ingress): `X-Forwarded-User`. Believed only from "
        "PERFPULSE_TRUSTED_PROXIES; from any other address it is ignored (and logged once).",
    )
    auth_proxy_auto_create: bool = Field(
        False,
        description="A user the proxy names who does not exist is created as a viewer "
        "(otherwise refused).",
    )
    api_docs: bool = Field(
        False, description="Serve the OpenAPI pages (/docs, /redoc; Swagger UI from a CDN)."
    )

    allowed_origins: str = Field(
        "",
        description="Comma-separated browser origins allowed on the WebSocket besides the "
        "server's own (same-origin only when empty).",
    )
    ws_queue_size: int = Field(
        8, ge=1, le=1000, description="Snapshots waiting per client; the oldest are dropped."
    )
    ws_send_timeout_seconds: float = Field(
        10, gt=0, le=600, description="A client whose send stalls this long is evicted."
    )
    ws_resume_buffer: int = Field(
        600, ge=0, le=100_000, description="Recent snapshots kept for `resume_from`."
    )
    ws_max_message_bytes: int = Field(
        4096, ge=64, le=1 << 20, description="Largest message a client may send."
    )
    ws_max_messages_per_second: float = Field(
        5, gt=0, le=1000, description="Client message rate above which it is disconnected."
    )
    ws_ping_interval_seconds: float = Field(
        20, gt=0, le=3600, description="Keepalive ping interval (and pong timeout)."
    )
    ws_max_control_frames_per_second: float = Field(
        10,
        gt=0,
        le=10_000,
        description="Pings and pongs a client may send a second; past it, it is dropped.",
    )
    ws_max_streams_per_user: int = Field(
        32,
        ge=1,
        le=100_000,
        description="Open streams per user on this instance; more are closed with 4429.",
    )
    ws_max_replays: int = Field(
        8,
        ge=1,
        le=10_000,
        description="`resume_from` replays sent at once, server-wide; the others wait.",
    )

    history_concurrency: int = Field(
        4,
        ge=1,
        le=100,
        description="History queries run at once, on database connections of their own.",
    )
    history_queue: int = Field(
        16,
        ge=0,
        le=10_000,
        description="History queries waiting for one of those; more get 503.",
    )
    history_per_user: int = Field(
        8,
        ge=1,
        le=1000,
        description="History queries one user may have running or waiting; more get 429.",
    )
    history_timeout_seconds: float = Field(
        10, gt=0, le=600, description="A history query is cancelled after this (503)."
    )
    history_raw_max_hours: float = Field(
        6,
        gt=0,
        le=24 * 366,
        description="Longest range served from raw snapshots; longer ones come from the "
        "minute rollups.",
    )

    batch_size: int = Field(10, ge=1, le=10_000, description="Snapshots per flush to PostgreSQL.")
    batch_max_age_seconds: float = Field(
        5.0, gt=0, le=3600, description="A snapshot waits at most this long before a flush."
    )
    writer_max_buffered: int = Field(
        12_000,
        ge=1,
        le=10_000_000,
        description="Snapshots kept while PostgreSQL is down (12,000 = 3 h 20 min at 1 s); "
        "past it the oldest are dropped and counted.",
    )
    writer_drain_batch: int = Field(
        1000, ge=1, le=100_000, description="Snapshots per transaction when draining a backlog."
    )
    writer_spool: bool = Field(
        True, description="On shutdown during an outage, keep unwritten snapshots on disk."
    )
    shutdown_timeout_seconds: float = Field(
        10, gt=0, le=600, description="How long shutdown may spend flushing pending snapshots."
    )
    retention_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="Days every snapshot is kept, every field (the compacted tier, and the "
        "minute rollups Grafana reads).",
    )
    retention_minutes_days: int = Field(
        365,
        ge=1,
        le=36500,
        description="Days the minute aggregates (avg, min, max, last of every field) are kept.",
    )
    retention_hours_days: int = Field(
        1825,
        ge=1,
        le=36500,
        description="Days the hour aggregates are kept.",
    )
    storage_hot_seconds: float = Field(
        120,
        ge=60,
        le=7 * 86400,
        description="Snapshots stay as written (one JSON row per section) this long, then "
        "the compactor packs them into compressed chunks.",
    )
    storage_compact: bool = Field(
        True,
        description="Run the compactor in this instance (one instance per database compacts "
        "at a time; it needs a direct connection, not a transaction pooler).",
    )
    storage_compact_interval_seconds: float = Field(
        60, ge=1, le=3600, description="How often the compactor looks for work."
    )
    alert_rules: Path | None = Field(
        None,
        description="A YAML file of alert rules evaluated on every snapshot (`perfpulse "
        "alerts check FILE` validates one); empty: the built-in default set.",
    )
    alerts: bool = Field(True, description="Evaluate alert rules on this host's snapshots.")
    alertmanager_url: str = Field(
        "",
        description="Alertmanager base URLs, comma-separated: firing alerts are posted to "
        "their /api/v2/alerts, re-sent while firing, and resolved.",
    )
    alert_resend_seconds: float = Field(
        60, ge=1, le=3600, description="How often firing alerts are re-sent to Alertmanager."
    )
    alert_webhook_urls: str = Field(
        "",
        description="Webhook URLs, comma-separated: a JSON body per alert state change "
        "(firing, resolved), retried until taken.",
    )
    alert_webhook_secret: SecretStr | None = Field(
        None,
        description="Signs webhook bodies: X-Perfpulse-Signature: sha256=HMAC-SHA256(body).",
    )

    @field_validator("jwt_secret")
    @classmethod
    def _secret_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value().encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"must be at least {MIN_SECRET_BYTES} bytes")
        return value

    @field_validator("database_url", "database_listen_url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        url = value.get_secret_value()
        scheme = urlsplit(url).scheme if "://" in url else ""
        if scheme not in ("postgres", "postgresql"):
            shown = f"{scheme}://..." if scheme else "a value without a scheme"
            raise ValueError(f"must be a postgresql://user:password@host/db URL, not {shown}")
        return value

    @field_validator("alertmanager_url", "alert_webhook_urls")
    @classmethod
    def _http_urls(cls, value: str) -> str:
        for item in value.split(","):
            url = item.strip()
            if url and urlsplit(url).scheme not in ("http", "https"):
                raise ValueError("must be http:// or https:// URLs, comma-separated")
        return value

    @property
    def alertmanager_urls(self) -> list[str]:
        return [u.strip() for u in self.alertmanager_url.split(",") if u.strip()]

    @property
    def webhook_urls(self) -> list[str]:
        return [u.strip() for u in self.alert_webhook_urls.split(",") if u.strip()]

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        for item in value.split(","):
            if item.strip():
                try:
                    ipaddress.ip_network(item.strip(), strict=False)
                except ValueError:
                    raise ValueError(f"{item.strip()!r} is not an IP address or network") from None
        return value

    @property
    def proxies(self) -> list[str]:
        return [item.strip() for item in self.trusted_proxies.split(",") if item.strip()]

    @field_validator("perf_events")
    @classmethod
    def _events_are_names(cls, value: str) -> str:
        for event in value.split(","):
            if not re.fullmatch(r"[A-Za-z0-9_.:/=\-]+", event.strip()):
                raise ValueError(f"{event!r} is not a perf event name")
        return value

    @field_validator("collectors")
    @classmethod
    def _known_collectors(cls, value: str) -> str:
        unknown = sorted({n.strip() for n in value.split(",") if n.strip()} - set(COLLECTOR_NAMES))
        if unknown:
            raise ValueError(
                f"unknown collector {', '.join(unknown)} (known: {', '.join(COLLECTOR_NAMES)})"
            )
        return value

    @property
    def collector_set(self) -> frozenset[str]:
        return frozenset(n.strip() for n in self.collectors.split(",") if n.strip())

    @property
    def perf_event_list(self) -> list[str]:
        return [event.strip() for event in self.perf_events.split(",") if event.strip()]

    @property
    def origins(self) -> frozenset[str]:
        return frozenset(
            o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()
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

    @model_validator(mode="after")
    def _does_something(self) -> Settings:
        if not self.collect and not self.dashboard:
            raise ValueError(
                "PERFPULSE_COLLECT and PERFPULSE_DASHBOARD are both off: nothing to run"
            )
        return self

    @property
    def pool_size(self) -> int:
        """Most pooled connections: an agent writes and relays with two."""
        if self.database_pool_size is not None:
            return self.database_pool_size
        return 10 if self.dashboard else 2

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
        secret = "secret" in field or "url" in field
        shown = "" if field == "" or secret or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"{name}: {error['msg']}{shown}")
    return "invalid configuration: " + "; ".join(lines)
