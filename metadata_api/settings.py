"""All server settings in one place, read from the environment and `.env` (pydantic-settings).

Every variable has the plain upper-case name of its field (HOST, PORT, DEBUG, DATABASE_URL, LOG_LEVEL,
METRICS_RETENTION_DAYS, HEARTBEAT_TIMEOUT_SECONDS, MAX_BODY_BYTES, ...). `.env.example` lists every one.
"""

from __future__ import annotations

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
    max_points_per_batch: int = Field(50_000, gt=0)
    artifact_root: Path = Path(".")
    alertmanager_url: str | None = None

    # Database and retention jobs.
    auto_migrate: bool = True
    sqlite_busy_timeout_ms: int = Field(30_000, ge=0)
    retention_interval_seconds: float = Field(3600, gt=0)
    prune_batch_size: int = Field(5000, gt=0)

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

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (environment and `.env` read once)."""
    return Settings()
