"""Fixtures for the metadata API tests, each parametrised over SQLite (a file) and a real PostgreSQL.

- `database_url`: a fresh, empty database per test (a SQLite file in tmp_path, or a new PostgreSQL database
  on the session's server, dropped afterwards).
- `api_settings`: Settings on that database (no .env read; artifact root in tmp_path; ALLOWED_HOSTS the
  TestClient's `testserver`).
- `api`: a TestClient over `create_app(api_settings)`, lifespan run (migrations applied).
- `make_api(**overrides)`: more clients on the same database with other settings (limits, timeouts).
- `session_factory`: write sessions on the test database, for arranging state the API cannot create.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker
from support.procs import fresh_postgres_database
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.db import make_engine, write_sessions
from trainmon.metadata_api.settings import Settings

BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'trainmon-api.db'}"
        return
    server_url: str = request.getfixturevalue("postgres_url")
    with fresh_postgres_database(server_url) as url:
        yield url


@pytest.fixture
def backend(database_url: str) -> str:
    return "sqlite" if database_url.startswith("sqlite") else "postgres"


@pytest.fixture
def api_settings(database_url: str, tmp_path: Any) -> Settings:
    return Settings(_env_file=None, database_url=database_url, artifact_root=tmp_path / "artifact-root",
                    crash_check_interval_seconds=3600, retention_interval_seconds=3600,
                    allowed_hosts="testserver")  # the Host header of TestClient


@pytest.fixture
def make_api(api_settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """`make_api(**setting_overrides)` -> a started TestClient on the test database (stopped at teardown)."""
    with contextlib.ExitStack() as stack:

        def make(**overrides: Any) -> TestClient:
            settings = api_settings.model_copy(update=overrides)
            return stack.enter_context(TestClient(create_app(settings)))

        yield make


@pytest.fixture
def api(make_api: Callable[..., TestClient]) -> TestClient:
    return make_api()


@pytest.fixture
def session_factory(api: TestClient, api_settings: Settings) -> Iterator[sessionmaker[Session]]:
    """Write sessions on the test database (migrated by `api`)."""
    engine = make_engine(api_settings.database_url)
    try:
        yield write_sessions(engine)
    finally:
        engine.dispose()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    """An engine on the test database, not migrated (the migration tests drive Alembic themselves)."""
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()
