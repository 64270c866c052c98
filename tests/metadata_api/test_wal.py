"""WAL checkpoints off the request path (`wal`): commits on the API's connections leave the WAL alone up to the
backstop, and the app's job checkpoints it in a worker thread. SQLite only."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support.procs import wait_until
from trainmon.metadata_api import db, transactions, wal

KEYS = ("loss", "accuracy", "lr", "grad_norm")


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides conftest's SQLite + PostgreSQL pair)."""
    return f"sqlite:///{tmp_path / 'trainmon-api.db'}"


def write_batches(api: TestClient, count: int) -> None:
    """`count` committed 100-point batches of one run (several WAL pages each)."""
    assert api.post("/api/runs", json={"experiment": "e", "run_id": "r"}).status_code == 201
    for number in range(count):
        rows = [[step, None, {key: float(step) for key in KEYS}] for step in range(number * 25, number * 25 + 25)]
        answer = api.post("/api/runs/r/metrics", json={"batch_id": f"b{number}", "rows": rows})
        assert answer.status_code == 200, answer.text


def test_commits_leave_the_wal_to_the_job(make_api: Callable[..., TestClient],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_SECONDS", 3600)  # the job does not run in this test
    api = make_api()
    engine = api.app.state.engine
    pooled = engine.raw_connection()
    try:
        assert pooled.cursor().execute("PRAGMA wal_autocheckpoint").fetchone()[0] == wal.WAL_BACKSTOP_PAGES
    finally:
        pooled.close()
    write_batches(api, 300)
    busy, frames, done = wal.checkpoint(engine)
    assert frames > 1_000, frames  # SQLite's default would have checkpointed (and restarted the WAL) at 1,000
    assert (busy, done) == (0, frames)  # one passive checkpoint catches up completely


def test_the_job_checkpoints_in_the_background(make_api: Callable[..., TestClient],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wal, "CHECKPOINT_INTERVAL_SECONDS", 0.05)
    results: list[tuple[int, int, int]] = []
    checkpoint = wal.checkpoint
    monkeypatch.setattr(wal, "checkpoint", lambda engine: results.append(checkpoint(engine)) or results[-1])
    api = make_api()
    write_batches(api, 20)
    wait_until(lambda: any(frames > 0 and done == frames for _busy, frames, done in results), timeout=10,
               what="a background checkpoint of the written frames")


def test_connections_keep_ingests_pages_in_memory(make_api: Callable[..., TestClient]) -> None:
    """Every connection (pooled, and the event loop's writer) has a page cache for the pages many ranks' batches
    touch (`db.PAGE_CACHE_KIB`; SQLite's default 2,000 KiB missed about 10 pages a 100-point batch from 64 ranks)
    and keeps statement journals and RETURNING rows in memory, not in temporary files."""
    api = make_api()
    write_batches(api, 2)  # opens the loop's writer
    engine = api.app.state.engine
    pooled = engine.raw_connection()
    try:
        cursors = [pooled.cursor(), transactions._LOOP_WRITERS[engine]._connection._pooled.cursor()]
        for cursor in cursors:
            assert cursor.execute("PRAGMA cache_size").fetchone()[0] == -db.PAGE_CACHE_KIB
            assert cursor.execute("PRAGMA temp_store").fetchone()[0] == 2  # MEMORY
    finally:
        pooled.close()
