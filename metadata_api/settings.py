"""All server settings in one place, read from the environment and `.env` (pydantic-settings).

Every variable has the plain upper-case name of its field (HOST, PORT, DEBUG, DATABASE_URL, LOG_LEVEL,
METRICS_RETENTION_DAYS, HEARTBEAT_TIMEOUT_SECONDS, MAX_BODY_BYTES, ...). `.env.example` lists every one.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from trainmon.common.statuses import LOG_LEVELS


class Settings(BaseSettings):
    """Metadata API configuration; every field maps to the upper-case environment variable of its name."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore",
                                      case_sensitive=False, env_ignore_empty=True)  # VAR= means unset

    # Server, database, logging, retention and notifications.
    host: str = "127.0.0.1"
    port: int = Field(5000, ge=1, le=65535)
    debug: bool = False
    opentelemetry: bool = False  # FastAPI's own OpenTelemetry instrumentation (docs/api.md)
    database_url: str = "sqlite:///training_monitor.db"
    log_level: str = "INFO"
    metrics_retention_days: float = Field(30, gt=0)
    enable_notifications: bool = False
    slack_webhook_url: str | None = None
    email_notifications: str | None = None  # comma-separated addresses

    # Lifecycle and limits.
    heartbeat_timeout_seconds: float = Field(300, gt=0)
    crash_check_interval_seconds: float = Field(30, gt=0)
    max_body_bytes: int = Field(10 * 1024 * 1024, gt=0)
    max_artifact_bytes: int = Field(200 * 1024 * 1024, gt=0)
    max_checkpoint_bytes: int = Field(64 * 1024**3, gt=0)  # an uploaded checkpoint file
    max_points_per_batch: int = Field(50_000, gt=0)
    # Per run (services/limits.py): 413 naming the limit above these.
    max_tags_per_run: int = Field(1000, gt=0)
    max_params_bytes: int = Field(1024 * 1024, gt=0)  # params as JSON (also checkpoint metrics, artifact metadata)
    max_notes_per_run: int = Field(10_000, gt=0)
    max_note_bytes: int = Field(65_536, gt=0)  # one note's text in UTF-8
    artifact_root: Path = Path(".")
    alertmanager_url: str | None = None

    # Database and retention jobs.
    auto_migrate: bool = True
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)
    retention_interval_seconds: float = Field(3600, gt=0)
    prune_batch_size: int = Field(5000, gt=0)

    # Browser and network safety (metadata_api/security.py, ratelimit.py, services/url_policy.py).
    allowed_hosts: str | None = None  # comma-separated Host names; unset: HOST plus the loopback names; `*`: any
    auth_failures_per_minute: int = Field(20, ge=0)  # per client address, then 429; 0: no limit
    writes_per_minute: int = Field(30_000, ge=0)  # per token (per address without one), then 429; 0: no limit
    exporter_url_allow: str | None = None  # comma-separated CIDRs accepted in exporter_url despite the policy

    # The dashboard's links from a run page (metadata_api/web), as users' browsers reach them; unset: no link.
    prometheus_url: str | None = None  # a Prometheus graph of the run's series
    grafana_url: str | None = None  # the training-overview dashboard of the run (GRAFANA_URL, as notifications)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.upper()
        if level not in LOG_LEVELS:
            raise ValueError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
        return level

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, value: str) -> str:
        if value.startswith("postgresql://") or value.startswith("postgres://"):
            # psycopg 3 is the driver we ship; plain URLs would make SQLAlchemy look for psycopg2.
            return "postgresql+psycopg://" + value.split("://", 1)[1]
        if not (value.startswith("sqlite") or value.startswith("postgresql+psycopg://")):
            raise ValueError("DATABASE_URL must be sqlite:///PATH or postgresql+psycopg://USER@HOST/DB")
        return value

    @field_validator("allowed_hosts")
    @classmethod
    def _host_patterns(cls, value: str | None) -> str | None:
        for pattern in split_list(value):
            if "*" in pattern[1:] or (pattern.startswith("*") and pattern != "*" and not pattern.startswith("*.")):
                raise ValueError(f"ALLOWED_HOSTS: {pattern!r} is not a name, an address, '*.domain' or '*'")
        return value

    @field_validator("exporter_url_allow")
    @classmethod
    def _networks(cls, value: str | None) -> str | None:
        for network in split_list(value):
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError as error:
                raise ValueError(f"EXPORTER_URL_ALLOW: {error}") from None
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


def split_list(value: str | None) -> list[str]:
    """The items of a comma-separated setting, stripped, empty ones left out."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment and `.env` read once)."""
    return Settings()
