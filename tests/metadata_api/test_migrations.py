"""Alembic: upgrade from empty equals the models' schema; downgrade/upgrade round trip; concurrent starts."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, inspect, text
from trainmon.metadata_api import migrations
from trainmon.metadata_api.db import make_engine
from trainmon.metadata_api.models import Base

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    try:
        yield engine
    finally:
        engine.dispose()


def schema_differences(engine: Engine) -> list:
    with engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return compare_metadata(context, Base.metadata)


def user_tables(engine: Engine) -> set[str]:
    return set(inspect(engine).get_table_names()) - {"alembic_version"}


def test_upgrade_from_empty_gives_the_models_schema(engine: Engine) -> None:
    assert user_tables(engine) == set()
    migrations.upgrade(engine)
    assert user_tables(engine) == set(Base.metadata.tables)
    assert schema_differences(engine) == []
    assert migrations.current_revision(engine) == migrations.head_revision()


def test_downgrade_to_base_and_upgrade_again(engine: Engine) -> None:
    migrations.upgrade(engine)
    migrations.downgrade(engine, "base")
    assert user_tables(engine) == set()
    assert migrations.current_revision(engine) is None
    migrations.upgrade(engine)
    assert schema_differences(engine) == []


def test_upgrade_is_safe_when_processes_start_together(database_url: str, engine: Engine) -> None:
    """Four processes upgrading one empty database at once (API replicas starting together) all succeed."""
    code = ("import sys; from trainmon.metadata_api import migrations; from trainmon.metadata_api.db import "
            "make_engine; migrations.upgrade(make_engine(sys.argv[1]))")
    processes = [subprocess.Popen([sys.executable, "-c", code, database_url], stderr=subprocess.PIPE)
                 for _ in range(4)]
    failures = [process.stderr.read().decode() for process in processes if process.wait(timeout=120) != 0]
    assert failures == []
    assert migrations.current_revision(engine) == migrations.head_revision()
    assert schema_differences(engine) == []


def test_0002_turns_each_registered_exporter_url_into_an_endpoint(engine: Engine) -> None:
    """Runs registered before per-rank endpoints keep being discovered after the upgrade."""
    migrations.upgrade(engine, "0001")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO projects (id, name, created_at) VALUES (1, 'p', :t)"), {"t": NOW})
        connection.execute(text("INSERT INTO experiments (id, project_id, name, created_at) VALUES (1, 1, 'e', :t)"),
                           {"t": NOW})
        for run_id, rank, url in (("ranked", 3, "http://10.0.0.3:9400/metrics"), ("unranked", None, "http://h:1/m"),
                                  ("silent", 0, None)):
            connection.execute(text(
                "INSERT INTO runs (id, experiment_id, status, start_time, last_heartbeat, host, rank, exporter_url, "
                "params) VALUES (:id, 1, 'RUNNING', :t, :t, 'node', :rank, :url, '{}')"),
                {"id": run_id, "t": NOW, "rank": rank, "url": url})
    migrations.upgrade(engine)
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT run_id, rank, url, host FROM run_endpoints ORDER BY run_id")).all()
    assert [tuple(row) for row in rows] == [("ranked", 3, "http://10.0.0.3:9400/metrics", "node"),
                                            ("unranked", 0, "http://h:1/m", "node")]
