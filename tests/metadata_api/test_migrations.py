"""Alembic: upgrade from empty equals the models' schema; downgrade/upgrade round trip; concurrent starts."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, Engine, inspect, text
from trainmon.metadata_api import migrations
from trainmon.metadata_api.models import Base

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


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
    migrations.upgrade(engine, "0003")
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT run_id, rank, url, host FROM run_endpoints ORDER BY run_id")).all()
    assert [tuple(row) for row in rows] == [("ranked", 3, "http://10.0.0.3:9400/metrics", "node"),
                                            ("unranked", 0, "http://h:1/m", "node")]


def _v3_rows(connection: Connection) -> None:
    """One row in every run-owned table of schema 0003, for two runs of two projects."""
    for number, name in ((1, "p"), (2, "q")):
        connection.execute(text("INSERT INTO projects (id, name, created_at) VALUES (:n, :name, :t)"),
                           {"n": number, "name": name, "t": NOW})
        connection.execute(text("INSERT INTO experiments (id, project_id, name, created_at) VALUES (:n, :n, 'e', :t)"),
                           {"n": number, "t": NOW})
    for run_id, experiment in (("late", 2), ("early", 1)):
        connection.execute(text(
            "INSERT INTO runs (id, experiment_id, status, start_time, last_heartbeat, pid, rank, world_size, params) "
            "VALUES (:id, :e, 'RUNNING', :t, :t, 4242, 1, 2, '{\"lr\": 0.1}')"),
            {"id": run_id, "e": experiment, "t": NOW.replace(minute=experiment)})
        statements = [
            "INSERT INTO run_tags (run_id, key, value) VALUES (:r, 'k', :x)",
            "INSERT INTO run_endpoints (run_id, rank, url, updated_at) VALUES (:r, 1, 'http://h:1/metrics', :t)",
            "INSERT INTO notes (id, run_id, text, created_at) VALUES (:n, :r, :x, :t)",
            "INSERT INTO metric_points (run_id, key, step, value, special, wall_time) "
            "VALUES (:r, 'loss', 7, 0.5, 0, 1)",
            "INSERT INTO metric_blocks (run_id, key, block, first_step, last_step, count, min_value, max_value) "
            "VALUES (:r, 'loss', 0, 7, 7, 1, 0.5, 0.5)",
            "INSERT INTO ingest_batches (run_id, kind, batch_id, accepted, created_at) "
            "VALUES (:r, 'metrics', 'b', 1, :t)",
            "INSERT INTO log_lines (id, run_id, time, level, message) VALUES (:n, :r, :t, 'INFO', :x)",
            "INSERT INTO checkpoints (id, run_id, name, step, epoch, uri, size_bytes, sha256, metrics, created_at) "
            "VALUES (:n, :r, 'c.pt', 7, 1, 'file:///c.pt', 3, :sha, '{}', :t)",
            "INSERT INTO artifacts (id, run_id, kind, name, path, size_bytes, sha256, metadata, created_at) "
            "VALUES (:n, :r, 'file', 'a.txt', :x, 3, :sha, '{}', :t)",
        ]
        for statement in statements:
            connection.execute(text(statement), {"r": run_id, "x": run_id, "n": 10 * experiment, "t": NOW,
                                                 "sha": "0" * 64})


CHILD_TABLES = ("run_tags", "run_endpoints", "notes", "metric_points", "metric_blocks", "ingest_batches",
                "log_lines", "checkpoints", "artifacts")


def test_0004_gives_existing_runs_keys_and_moves_every_child_row_to_them(engine: Engine) -> None:
    migrations.upgrade(engine, "0003")
    with engine.begin() as connection:
        _v3_rows(connection)
    migrations.upgrade(engine)
    with engine.connect() as connection:
        runs = connection.execute(text("SELECT key, id, project_id, pid, rank, world_size FROM runs ORDER BY key"))
        assert [tuple(row) for row in runs] == [(1, "early", 1, 4242, 1, 2), (2, "late", 2, 4242, 1, 2)]  # start order
        for table in CHILD_TABLES:
            rows = connection.execute(text(f"SELECT r.id FROM {table} c JOIN runs r ON r.key = c.run_key "
                                           "ORDER BY r.id"))
            assert list(rows.scalars()) == ["early", "late"], table
        ids = connection.execute(text("SELECT r.id, c.id, c.path FROM checkpoints c JOIN runs r ON r.key = c.run_key "
                                      "ORDER BY c.id"))
        assert [tuple(row) for row in ids] == [("early", 10, None), ("late", 20, None)]  # ids kept, nothing stored
    with engine.begin() as connection:  # new rows get ids past the copied ones (PostgreSQL sequences moved)
        for table, columns, values in (("notes", "run_key, text, created_at", "1, 'n', :t"),
                                       ("checkpoints", "run_key, name, uri, size_bytes, sha256, metrics, created_at",
                                        "1, 'd.pt', 'u', 1, 's', '{}', :t"),
                                       ("artifacts", "run_key, kind, name, path, size_bytes, sha256, metadata, "
                                                     "created_at", "1, 'file', 'b', 'b', 1, 's', '{}', :t"),
                                       ("log_lines", "run_key, time, level, message", "1, :t, 'INFO', 'm'")):
            new_id = connection.execute(text(f"INSERT INTO {table} ({columns}) VALUES ({values}) RETURNING id"),
                                        {"t": NOW}).scalar_one()
            assert new_id > 20, table
        connection.execute(text("INSERT INTO runs (id, project_id, experiment_id, status, start_time, "
                                "last_heartbeat, pid, params) VALUES ('early', 2, 2, 'RUNNING', :t, :t, :pid, '{}')"),
                           {"t": NOW, "pid": 2**40})  # the same run id in another project; a 64-bit pid


def test_0004_downgrade_restores_global_run_ids(engine: Engine) -> None:
    migrations.upgrade(engine, "0003")
    with engine.begin() as connection:
        _v3_rows(connection)
    migrations.upgrade(engine)
    migrations.downgrade(engine, "0003")
    with engine.connect() as connection:
        assert list(connection.execute(text("SELECT id FROM runs ORDER BY id")).scalars()) == ["early", "late"]
        for table in CHILD_TABLES:
            rows = connection.execute(text(f"SELECT run_id FROM {table} ORDER BY run_id"))
            assert list(rows.scalars()) == ["early", "late"], table
    migrations.upgrade(engine)
    assert schema_differences(engine) == []


def test_0004_downgrade_refuses_a_run_id_used_in_two_projects(engine: Engine) -> None:
    migrations.upgrade(engine, "0003")
    with engine.begin() as connection:
        _v3_rows(connection)
    migrations.upgrade(engine, "0004")  # not head: a later revision's downgrade would commit first on SQLite only
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO runs (id, project_id, experiment_id, status, start_time, "
                                "last_heartbeat, params) VALUES ('early', 2, 2, 'RUNNING', :t, :t, '{}')"), {"t": NOW})
    with pytest.raises(RuntimeError, match="several projects"):
        migrations.downgrade(engine, "0003")
    assert migrations.current_revision(engine) == "0004"
