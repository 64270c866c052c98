"""Liveness, readiness (database reachable and migrated), database errors answered and counted; settings."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import create_engine
from trainmon.metadata_api import db, migrations
from trainmon.metadata_api.settings import Settings


def test_ready_when_migrated(api: TestClient) -> None:
    assert api.get("/healthz").json() == {"status": "ok", "service": "trainmon-metadata-api"}
    assert api.get("/readyz").json() == {"status": "ready", "revision": migrations.head_revision()}


def test_not_ready_and_db_errors_counted_when_not_migrated(make_api: Callable[..., TestClient]) -> None:
    api = make_api(auto_migrate=False)
    ready = api.get("/readyz")
    assert ready.status_code == 503 and "revision None" in ready.json()["reason"]
    failed = api.get("/api/experiments")  # no such table: storage unusable until migrated (then a retry works)
    assert (failed.status_code, failed.json()) == (503, {"detail": "database storage unavailable, retry later: "
                                                                   f"{db.SCHEMA_MISSING}"})
    assert failed.headers["retry-after"] == "5"
    assert api.get("/healthz").status_code == 200
    assert "trainmon_api_db_errors_total 1.0" in api.get("/metrics").text


@contextlib.contextmanager
def database_locked_by_another_writer(database_url: str) -> Iterator[None]:
    """Another client holds the write lock (SQLite) or an exclusive lock on `runs` (PostgreSQL) meanwhile."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "sqlite":
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                connection.begin()
                connection.exec_driver_sql("LOCK TABLE runs IN ACCESS EXCLUSIVE MODE")
            yield
            connection.rollback()
    finally:
        engine.dispose()


def test_a_busy_database_is_a_retryable_503(make_api: Callable[..., TestClient], database_url: str,
                                            backend: str) -> None:
    """A write that waits out the busy timeout (SQLite) or the lock timeout (PostgreSQL) answers 503 with
    Retry-After; the same request succeeds once the lock is gone."""
    if backend == "sqlite":
        api = make_api(sqlite_busy_timeout_ms=50)
    else:
        api = make_api(database_url=f"{database_url}?options=-c%20lock_timeout%3D200")
    body = {"experiment": "e", "run_id": "r"}
    with database_locked_by_another_writer(database_url):
        busy = api.post("/api/runs", json=body)
    assert busy.status_code == 503, busy.text
    assert busy.json()["detail"] == f"database busy or unavailable, retry: " \
                                    f"{'OperationalError' if backend == 'sqlite' else 'LockNotAvailable'}"
    assert busy.headers["retry-after"] == "1"
    assert api.post("/api/runs", json=body).status_code == 201


def test_heartbeat_needs_no_body(api: TestClient) -> None:
    api.post("/api/runs", json={"experiment": "e", "run_id": "r"})
    assert api.post("/api/runs/r/heartbeat").status_code == 204


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)


def test_settings_read_plain_variables_from_env_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("PORT=5055\nMETRICS_RETENTION_DAYS=7\nLOG_LEVEL=debug\n"
                                   "DATABASE_URL=postgresql://u@db:5432/tm\n")
    monkeypatch.setenv("HOST", "0.0.0.0")
    monkeypatch.setenv("PORT", "6000")  # the environment wins over .env
    settings = Settings()
    assert (settings.host, settings.port, settings.metrics_retention_days, settings.log_level) == (
        "0.0.0.0", 6000, 7, "DEBUG")
    assert settings.database_url == "postgresql+psycopg://u@db:5432/tm"


def test_settings_defaults_and_bad_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    defaults = Settings()
    assert (defaults.host, defaults.port, defaults.database_url, defaults.metrics_retention_days) == (
        "127.0.0.1", 5000, "sqlite:///training_monitor.db", 30)
    monkeypatch.setenv("LOG_LEVEL", "chatty")
    with pytest.raises(ValidationError, match="LOG_LEVEL"):
        Settings()
    monkeypatch.setenv("LOG_LEVEL", "INFO")
    monkeypatch.setenv("DATABASE_URL", "mysql://x")
    with pytest.raises(ValidationError, match="DATABASE_URL"):
        Settings()


def test_env_example_lists_every_setting() -> None:
    text = (Path(__file__).resolve().parents[2] / ".env.example").read_text()
    listed = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, re.MULTILINE))
    assert {name.upper() for name in Settings.model_fields} - listed == set()


def test_an_empty_variable_means_unset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`ENABLE_NOTIFICATIONS=` (as compose writes an unset variable) keeps the default instead of failing."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ENABLE_NOTIFICATIONS", "")
    monkeypatch.setenv("PORT", "")
    settings = Settings()
    assert settings.port == 5000
    assert settings.enable_notifications == Settings.model_fields["enable_notifications"].default
