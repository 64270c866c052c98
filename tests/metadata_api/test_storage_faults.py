"""The SQLite file deleted, made read-only or its disk full while the API runs: requests answer 503 with
Retry-After and what is wrong (the client retries them, so nothing it was told is stored gets lost), nothing is
half-written, and /readyz stays 503 until it is fixed.

Real faults where the machine allows: `chattr +i` makes the file read-only even for root (who ignores permission
bits), a small tmpfs really fills up. Where it does not (no `chattr`, no right to mount), SQLite's own errors stand
in for them (`PRAGMA query_only`, `PRAGMA max_page_count`), with the free space /readyz reads set to none; never a
skip.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event
from trainmon.metadata_api import db
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings

RUN = {"experiment": "e", "run_id": "r"}


def batch(batch_id: str, count: int, key: str = "loss") -> dict[str, Any]:
    return {"batch_id": batch_id, "points": [{"key": key, "step": step, "value": step * 0.5, "wall_time": 1.0}
                                             for step in range(count)]}


@contextlib.contextmanager
def api_on(path: Path, **overrides: Any) -> Iterator[TestClient]:
    settings = Settings(_env_file=None, database_url=f"sqlite:///{path}", artifact_root=path.parent / "artifacts",
                        crash_check_interval_seconds=3600, retention_interval_seconds=3600,
                        allowed_hosts="testserver", **overrides)
    with TestClient(create_app(settings)) as client:
        yield client


def assert_storage_503(answer: Any, reason: str) -> None:
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == "5"
    assert answer.json()["detail"] == f"database storage unavailable, retry later: {reason}"


def assert_not_ready(api: TestClient, reason: str) -> None:
    ready = api.get("/readyz")
    assert ready.status_code == 503, ready.text
    assert ready.json()["status"] == "unavailable" and ready.json()["reason"].startswith(reason), ready.json()


def stored_points(api: TestClient, key: str = "loss") -> int:
    answer = api.get(f"/api/runs/r/metrics/{key}", params={"after_step": -1, "limit": 100_000})
    return len(answer.json()["points"]) if answer.status_code == 200 else 0


def test_a_deleted_database_file_is_503_and_not_ready_for_good(tmp_path: Path) -> None:
    path = tmp_path / "api.db"
    with api_on(path) as api:
        assert api.post("/api/runs", json=RUN).status_code == 201
        assert api.post("/api/runs/r/metrics", json=batch("b1", 10)).status_code == 200
        path.unlink()  # the WAL connection would go on writing into the unlinked file, all lost at the next start
        reason = "database file was deleted or replaced"
        for _ in range(2):
            assert_storage_503(api.post("/api/runs/r/metrics", json=batch("b2", 10)), reason + " (restore it, or "
                               "restart the API to use the new file)")
            assert_storage_503(api.get("/api/runs/r"), reason + " (restore it, or restart the API to use the new file)")
            assert_not_ready(api, reason)
        assert not path.exists()  # no new, empty file was created behind the operator's back
        assert api.get("/healthz").status_code == 200  # alive: only the storage is gone
        assert "trainmon_api_db_errors_total" in api.get("/metrics").text


def test_a_replaced_database_file_is_not_used(tmp_path: Path) -> None:
    path = tmp_path / "api.db"
    with api_on(path) as api:
        assert api.post("/api/runs", json=RUN).status_code == 201
        (tmp_path / "restored.db").write_bytes(path.read_bytes())
        os.replace(tmp_path / "restored.db", path)  # e.g. a backup restored by renaming it over the file
        assert_storage_503(api.post("/api/runs/r/heartbeat"), "database file was deleted or replaced (restore it, "
                           "or restart the API to use the new file)")
        assert_not_ready(api, "database file was deleted or replaced")
    with api_on(path) as api:  # a restart takes the new file
        assert api.get("/readyz").status_code == 200
        assert api.post("/api/runs/r/heartbeat").status_code == 204


def _chattr(flag: str, path: Path) -> bool:
    try:
        return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0
    except OSError:
        return False


@contextlib.contextmanager
def read_only(api: TestClient, path: Path) -> Iterator[str]:
    """The database made read-only: `chattr +i` (real, even for root), else every connection `query_only`."""
    if _chattr("+i", path):
        try:
            yield "chattr"
        finally:
            _chattr("-i", path)
        return
    engine = api.app.state.engine

    def query_only(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(engine, "connect", query_only)
    engine.dispose()
    try:
        yield "query_only"
    finally:
        event.remove(engine, "connect", query_only)
        engine.dispose()


def test_a_read_only_database_is_503_and_not_ready_until_writable_again(tmp_path: Path) -> None:
    path = tmp_path / "api.db"
    with api_on(path) as api:
        assert api.post("/api/runs", json=RUN).status_code == 201
        with read_only(api, path):
            assert_storage_503(api.post("/api/runs/r/metrics", json=batch("b1", 10)), "database is read-only")
            assert_storage_503(api.post("/api/runs/r/tags", json={"tags": {"a": "b"}}), "database is read-only")
            assert_not_ready(api, "database is read-only")
            assert api.get("/api/runs/r").status_code == 200  # reads go on
        assert api.get("/readyz").status_code == 200
        assert api.post("/api/runs/r/metrics", json=batch("b1", 10)).json() == {"accepted": 10, "duplicate": False}
        assert stored_points(api) == 10


def _mount_tmpfs(directory: Path, size: str) -> bool:
    directory.mkdir()
    try:
        mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                                 capture_output=True)
    except OSError:
        return False
    return mounted.returncode == 0


def _fill(directory: Path) -> Path:
    filler = directory / "filler"
    with contextlib.suppress(OSError), open(filler, "wb", buffering=0) as file:  # until ENOSPC
        while True:
            file.write(b"\0" * 65536)
    with contextlib.suppress(OSError), open(directory / "crumbs", "wb", buffering=0) as file:  # the last blocks
        while True:
            file.write(b"\0" * 512)
    return filler


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path | None]:
    """A directory on an 8 MiB tmpfs (None where mounting is not allowed); unmounted afterwards."""
    directory = tmp_path / "small-disk"
    mounted = _mount_tmpfs(directory, "8m")
    try:
        yield directory if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)


@contextlib.contextmanager
def disk_full(api: TestClient, directory: Path | None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The database's disk full: the tmpfs filled up, else SQLite capped at its size and no free space reported."""
    if directory is not None:
        filler = _fill(directory)
        try:
            yield
        finally:
            filler.unlink()
            (directory / "crumbs").unlink()
        return
    engine = api.app.state.engine
    with engine.connect() as connection:
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar()

    def capped(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute(f"PRAGMA max_page_count = {int(pages)}")

    event.listen(engine, "connect", capped)
    engine.dispose()
    monkeypatch.setattr(db.SqliteStorage, "free_bytes", lambda _self: 0)
    try:
        yield
    finally:
        monkeypatch.undo()
        event.remove(engine, "connect", capped)
        engine.dispose()


def test_a_full_disk_is_503_nothing_half_written_and_not_ready_until_space_is_freed(
        tmp_path: Path, small_disk: Path | None, monkeypatch: pytest.MonkeyPatch) -> None:
    path = (small_disk or tmp_path) / "api.db"
    with api_on(path) as api:
        assert api.post("/api/runs", json=RUN).status_code == 201
        assert api.post("/api/runs/r/metrics", json=batch("small", 10, key="before")).status_code == 200
        big = batch("big", 40_000)  # a few MB of pages: more than the WAL has room for
        with disk_full(api, small_disk, monkeypatch):
            for _ in range(2):  # the client retries: still full
                assert_storage_503(api.post("/api/runs/r/metrics", json=big), "disk full")
            assert_not_ready(api, "disk full")
            assert api.get("/api/runs/r").status_code == 200
        assert api.get("/readyz").status_code == 200
        assert stored_points(api) == 0  # the failed batch left nothing behind
        assert api.post("/api/runs/r/metrics", json=big).json() == {"accepted": 40_000, "duplicate": False}
        assert stored_points(api) == 40_000 and stored_points(api, "before") == 10


def test_storage_problems_are_classified(tmp_path: Path) -> None:
    """SQLite's and PostgreSQL's storage errors by code; anything else is no storage problem."""

    class Cause(Exception):
        def __init__(self, message: str, code: int | None = None, sqlstate: str | None = None):
            super().__init__(message)
            if code is not None:
                self.sqlite_errorcode = code
            if sqlstate is not None:
                self.sqlstate = sqlstate

    Cause.__module__ = "sqlite3"

    def wrapped(cause: Exception) -> Exception:
        from sqlalchemy.exc import OperationalError

        return OperationalError("statement", {}, cause)

    assert db.storage_problem(wrapped(Cause("attempt to write a readonly database", 8))) == "database is read-only"
    assert db.storage_problem(wrapped(Cause("database or disk is full", 13))) == "disk full"
    assert db.storage_problem(wrapped(Cause("disk I/O error", 10 | 3 << 8))) == "disk I/O error on the database file"
    assert db.storage_problem(wrapped(Cause("no such table: runs", 1))) == db.SCHEMA_MISSING
    assert db.storage_problem(wrapped(Cause("database is locked", 5))) is None
    pg = type("DiskFull", (Exception,), {"sqlstate": "53100"})
    assert db.storage_problem(wrapped(pg("could not extend file"))) == "disk full"
    assert db.storage_problem(ValueError("x")) is None


def test_wal_is_set_once_and_waited_for(tmp_path: Path) -> None:
    """A fresh file is switched to WAL once, waiting while another process holds it (SQLite does not wait for a
    journal mode change by itself: "database is locked" at once); a file in WAL mode is only read."""
    path = tmp_path / "wal.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")  # another process creating the schema
    threading.Timer(0.5, holder.rollback).start()
    fresh = sqlite3.connect(path, isolation_level=None, timeout=0)
    started = time.monotonic()
    db._use_wal(fresh.cursor(), busy_timeout_ms=10_000)
    assert time.monotonic() - started >= 0.4
    assert fresh.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    statements: list[str] = []
    again = sqlite3.connect(path, isolation_level=None)
    again.set_trace_callback(statements.append)
    db._use_wal(again.cursor(), busy_timeout_ms=10_000)
    assert statements == ["PRAGMA journal_mode"]
    with pytest.raises(sqlite3.OperationalError, match="locked"):  # a lock held past the timeout still fails
        blocker = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        db._use_wal(sqlite3.connect(tmp_path / "other.db", timeout=0).cursor(), busy_timeout_ms=300)
    for connection in (holder, fresh, again, blocker):
        connection.close()
