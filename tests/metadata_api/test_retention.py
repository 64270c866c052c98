"""Retention: points older than METRICS_RETENTION_DAYS go (in bounded batches), newer ones stay, from the function,
from the app's periodic job; a writer keeps writing while a large prune runs. Ingest idempotency records older
than the window go the same way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import event, select, text, update
from sqlalchemy.orm import Session, sessionmaker
from support.procs import wait_until
from trainmon.metadata_api.db import utcnow
from trainmon.metadata_api.models import IngestBatch, Run
from trainmon.metadata_api.services.retention import (
    Pruned,
    block_by_block,
    old_points,
    prune,
    prune_ingest_batches,
    prune_metric_points,
)

DAY = 86_400.0


def start(api: TestClient, run_id: str = "kept") -> None:
    assert api.post("/api/runs", json={"experiment": "retention", "run_id": run_id}).status_code == 201


def post(api: TestClient, batch_id: str, points: list[dict], run_id: str = "kept") -> None:
    answer = api.post(f"/api/runs/{run_id}/metrics", json={"batch_id": batch_id, "points": points})
    assert answer.status_code == 200, answer.text


def aged(steps: range, age_days: float, key: str = "loss") -> list[dict]:
    now = time.time()
    return [{"key": key, "step": s, "value": float(s), "wall_time": now - age_days * DAY} for s in steps]


def steps_left(api: TestClient, key: str = "loss", run_id: str = "kept") -> list[int]:
    answer = api.get(f"/api/runs/{run_id}/metrics/{key}", params={"limit": 100_000})
    return [p["step"] for p in answer.json()["points"]] if answer.status_code == 200 else []



def delete_row_counts(session_factory) -> list[int]:  # noqa: ANN001
    """A list that receives the row count of every DELETE the factory's engine runs from now on."""
    deletes: list[int] = []

    @event.listens_for(session_factory.kw["bind"], "after_cursor_execute")
    def count_deletes(_conn, cursor, statement, *_args) -> None:  # noqa: ANN001
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(cursor.rowcount)

    return deletes

def test_prune_deletes_old_points_in_bounded_batches(api: TestClient,
                                                     session_factory: sessionmaker[Session]) -> None:
    start(api)
    post(api, "old", aged(range(0, 25), age_days=31))
    post(api, "edge", aged(range(25, 30), age_days=29.9))
    post(api, "new", aged(range(30, 35), age_days=0))
    deletes = delete_row_counts(session_factory)

    assert prune_metric_points(session_factory, retention_days=30, batch_size=7, pause_seconds=0) == 25
    assert deletes == [7, 7, 7, 4]
    assert steps_left(api) == list(range(25, 35))
    assert prune_metric_points(session_factory, retention_days=30, batch_size=7) == 0


def age_batches(session_factory: sessionmaker[Session], batch_ids: list[str], age_days: float) -> None:
    with session_factory() as session:
        session.execute(update(IngestBatch).where(IngestBatch.batch_id.in_(batch_ids))
                        .values(created_at=utcnow() - timedelta(days=age_days)))
        session.commit()


def batch_ids_left(session_factory: sessionmaker[Session]) -> list[str]:
    with session_factory() as session:
        return sorted(session.scalars(select(IngestBatch.batch_id)))


def test_prune_deletes_old_ingest_records_in_bounded_batches(api: TestClient,
                                                             session_factory: sessionmaker[Session]) -> None:
    start(api)
    old = [f"old-{n}" for n in range(5)]
    for batch_id in [*old, "edge", "new"]:
        post(api, batch_id, aged(range(len(batch_id)), age_days=0, key=batch_id.replace("-", "_")))
    answer = api.post("/api/runs/kept/logs", json={"batch_id": "old-logs", "lines": [
        {"time": "2026-01-01T00:00:00Z", "level": "INFO", "message": "hello"}]})
    assert answer.status_code == 200, answer.text
    age_batches(session_factory, [*old, "old-logs"], age_days=31)
    age_batches(session_factory, ["edge"], age_days=29.9)
    deletes = delete_row_counts(session_factory)

    assert prune_ingest_batches(session_factory, retention_days=30, batch_size=4, pause_seconds=0) == 6
    assert deletes == [4, 2]
    assert batch_ids_left(session_factory) == ["edge", "new"]
    assert prune(session_factory, retention_days=30, batch_size=4) == Pruned(metric_points=0, ingest_batches=0)
    replay = api.post("/api/runs/kept/metrics", json={"batch_id": "new", "points": aged(range(1), 0, key="new")})
    assert replay.json()["duplicate"] is True  # records inside the window still guard against replays


def test_the_app_prunes_periodically(make_api: Callable[..., TestClient],
                                    session_factory: sessionmaker[Session]) -> None:
    api = make_api(retention_interval_seconds=0.2, metrics_retention_days=1)
    start(api)
    post(api, "old", aged(range(0, 10), age_days=2))
    post(api, "new", aged(range(10, 12), age_days=0))
    age_batches(session_factory, ["old"], age_days=2)
    wait_until(lambda: steps_left(api) == [10, 11], timeout=20, what="the retention job to prune points")
    wait_until(lambda: batch_ids_left(session_factory) == ["new"], timeout=20,
               what="the retention job to prune ingest records")


def test_a_writer_is_not_locked_out_during_a_large_prune(api: TestClient,
                                                         session_factory: sessionmaker[Session]) -> None:
    start(api)
    for start_step in range(0, 60_000, 20_000):
        post(api, f"old-{start_step}", aged(range(start_step, start_step + 20_000), age_days=100))
    done = threading.Event()
    pruned: list[int] = []

    def prune() -> None:
        try:
            pruned.append(prune_metric_points(session_factory, retention_days=30, batch_size=1000))
        finally:
            done.set()

    worker = threading.Thread(target=prune)
    worker.start()
    written_during_prune = 0
    batch = 0
    while not done.is_set() or batch < 3:
        post(api, f"live-{batch}", aged(range(100_000 + batch * 10, 100_000 + batch * 10 + 10), age_days=0,
                                        key="live"))
        written_during_prune += not done.is_set()
        batch += 1
    worker.join(timeout=60)
    assert pruned == [60_000]
    assert written_during_prune >= 3, "writes waited for the whole prune"
    assert len(steps_left(api, "live")) == batch * 10
    assert steps_left(api) == []


def test_old_points_are_found_block_by_block(api: TestClient, session_factory: sessionmaker[Session],
                                             backend: str) -> None:
    """The lookup reads the oldest blocks through their index and each block's points through the points' unique
    index, never the whole points table. 200,000 points of 20 runs, 1 % of them old: with these statistics
    PostgreSQL's own choice would be a hash join over a scan of every point (`block_by_block` rules it out)."""
    for number in range(20):
        start(api, f"run-{number:02d}")
    with session_factory() as session:
        keys = sorted(session.scalars(select(Run.key)))
        assert keys == list(range(keys[0], keys[0] + 20))
        session.execute(text(
            "WITH RECURSIVE n(g) AS (SELECT 0 UNION ALL SELECT g + 1 FROM n WHERE g < 199999) "
            "INSERT INTO metric_points (run_key, rank, key, step, value, special, wall_time) "
            "SELECT :first + g % 20, 0, 'k' || (g / 20 % 4), g / 80, 0.5, 0, 1000.0 + g FROM n"), {"first": keys[0]})
        session.execute(text(
            "INSERT INTO metric_blocks (run_key, rank, key, block, first_step, last_step, count, min_value, max_value, "
            "min_wall_time) SELECT run_key, rank, key, step / 64, MIN(step), MAX(step), COUNT(*), MIN(value), "
            "MAX(value), MIN(wall_time) FROM metric_points GROUP BY run_key, rank, key, step / 64"))
        session.commit()
    with session_factory() as session:
        if backend == "postgres":
            session.execute(text("ANALYZE metric_points"))
            session.execute(text("ANALYZE metric_blocks"))
        block_by_block(session)
        query = old_points(cutoff=1000.0 + 2_000, limit=500)
        compiled = str(query.compile(session.get_bind(), compile_kwargs={"literal_binds": True}))
        explain = "EXPLAIN " if backend == "postgres" else "EXPLAIN QUERY PLAN "
        plan = "\n".join(str(row[-1]) for row in session.execute(text(explain + compiled)))
        found = session.execute(query).all()
    assert len(found) == 500 and all(row.step < 25 for row in found), plan
    points_index = "uq_metric_points" if backend == "postgres" else "sqlite_autoindex_metric_points"
    assert "ix_metric_blocks_min_wall_time" in plan and points_index in plan, plan
    assert "Seq Scan on metric_points" not in plan and "SCAN metric_points" not in plan, plan
