"""Run lifecycle: legal and illegal transitions (409), heartbeats, resume, crash detection (background, on read)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker
from support.procs import wait_until
from trainmon.metadata_api.db import utcnow
from trainmon.metadata_api.models import Run

STATUSES = ("RUNNING", "COMPLETED", "FAILED", "CRASHED")
LEGAL = {("RUNNING", "COMPLETED"), ("RUNNING", "FAILED"), ("RUNNING", "CRASHED"), ("CRASHED", "COMPLETED"),
         ("CRASHED", "FAILED"), ("CRASHED", "RUNNING")}


def start(api: TestClient, run_id: str = "r", **fields: object) -> dict:
    response = api.post("/api/runs", json={"experiment": "lifecycle", "run_id": run_id, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def put_in(api: TestClient, run_id: str, status: str) -> None:
    start(api, run_id)
    if status != "RUNNING":
        assert api.post(f"/api/runs/{run_id}/status", json={"status": status}).status_code == 200


def silence(session_factory: sessionmaker[Session], run_id: str, seconds: float) -> None:
    """Pretend the run's last heartbeat was `seconds` ago."""
    with session_factory() as session:
        session.execute(update(Run).where(Run.id == run_id).values(
            last_heartbeat=utcnow() - timedelta(seconds=seconds)))
        session.commit()


def heartbeat_of(api: TestClient, run_id: str) -> datetime:
    return datetime.fromisoformat(api.get(f"/api/runs/{run_id}").json()["last_heartbeat"].replace("Z", "+00:00"))


def stored_status(session_factory: sessionmaker[Session], run_id: str) -> str:
    with session_factory() as session:
        return session.scalars(select(Run.status).where(Run.id == run_id)).one()


def test_every_transition_is_either_applied_or_409(api: TestClient) -> None:
    for current in STATUSES:
        for wanted in STATUSES:
            run_id = f"{current}-{wanted}".lower()
            put_in(api, run_id, current)
            response = api.post(f"/api/runs/{run_id}/status", json={"status": wanted})
            if current == wanted or (current, wanted) in LEGAL:
                assert response.status_code == 200, (current, wanted, response.text)
                assert response.json()["status"] == wanted
            else:
                assert response.status_code == 409, (current, wanted)
                assert f"is {current}" in response.json()["detail"]
                assert api.get(f"/api/runs/{run_id}").json()["status"] == current


def test_final_status_sets_end_time_and_repeating_it_is_harmless(api: TestClient) -> None:
    start(api)
    done = api.post("/api/runs/r/status", json={"status": "COMPLETED"}).json()
    assert done["end_time"] is not None
    again = api.post("/api/runs/r/status", json={"status": "COMPLETED"})
    assert again.status_code == 200 and again.json()["end_time"] == done["end_time"]


def test_unknown_status_is_422(api: TestClient) -> None:
    start(api)
    response = api.post("/api/runs/r/status", json={"status": "PAUSED"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["body", "status"]


def test_heartbeat_moves_last_heartbeat(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    start(api)
    silence(session_factory, "r", 60)
    before = heartbeat_of(api, "r")
    assert api.post("/api/runs/r/heartbeat", json={}).status_code == 204
    after = heartbeat_of(api, "r")
    assert after - before > timedelta(seconds=59)


def test_heartbeat_revives_a_crashed_run_but_not_a_finished_one(api: TestClient) -> None:
    put_in(api, "crashed", "CRASHED")
    assert api.post("/api/runs/crashed/heartbeat", json={}).status_code == 204
    assert api.get("/api/runs/crashed").json()["status"] == "RUNNING"
    put_in(api, "done", "COMPLETED")
    assert api.post("/api/runs/done/heartbeat", json={}).status_code == 409


def test_restarting_a_failed_run_resumes_it_a_completed_one_is_409(api: TestClient) -> None:
    put_in(api, "failed", "FAILED")
    resumed = api.post("/api/runs", json={"experiment": "lifecycle", "run_id": "failed"})
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "RUNNING" and resumed.json()["end_time"] is None
    put_in(api, "done", "COMPLETED")
    assert api.post("/api/runs", json={"experiment": "lifecycle", "run_id": "done"}).status_code == 409


def test_a_silent_run_is_crashed_when_read(make_api: Callable[..., TestClient],
                                           session_factory: sessionmaker[Session]) -> None:
    api = make_api(heartbeat_timeout_seconds=30)
    start(api, "silent", exporter_url="http://127.0.0.1:9/metrics")
    start(api, "alive", exporter_url="http://127.0.0.1:10/metrics")
    silence(session_factory, "silent", 31)
    silence(session_factory, "alive", 5)
    assert api.get("/api/runs/silent").json()["status"] == "CRASHED"
    assert api.get("/api/runs/alive").json()["status"] == "RUNNING"
    assert [group["labels"]["run_id"] for group in api.get("/api/sd").json()] == ["alive"]
    metrics = api.get("/metrics").text
    assert 'trainmon_api_run_status_changes_total{status="CRASHED"} 1.0' in metrics
    assert 'trainmon_api_runs{status="CRASHED"} 1.0' in metrics


@pytest.mark.parametrize("read", ["/api/experiments", "/api/experiments/1", "/api/sd"])
def test_listing_reads_crash_silent_runs_too(make_api: Callable[..., TestClient],
                                            session_factory: sessionmaker[Session], read: str) -> None:
    api = make_api(heartbeat_timeout_seconds=30)
    start(api, "silent", exporter_url="http://127.0.0.1:9/metrics")
    silence(session_factory, "silent", 31)
    api.get(read)
    assert stored_status(session_factory, "silent") == "CRASHED"


def test_background_detector_crashes_silent_runs_without_any_read(make_api: Callable[..., TestClient],
                                                                  session_factory: sessionmaker[Session]) -> None:
    api = make_api(heartbeat_timeout_seconds=30, crash_check_interval_seconds=0.2)
    start(api, "silent")
    start(api, "alive")
    silence(session_factory, "silent", 120)
    wait_until(lambda: stored_status(session_factory, "silent") == "CRASHED", timeout=20,
               what="the crash detector to mark the silent run")
    assert stored_status(session_factory, "alive") == "RUNNING"


def test_metric_batches_count_as_signs_of_life(make_api: Callable[..., TestClient],
                                               session_factory: sessionmaker[Session]) -> None:
    api = make_api(heartbeat_timeout_seconds=30)
    start(api)
    silence(session_factory, "r", 31)
    batch = {"batch_id": "b", "points": [{"key": "loss", "step": 1, "value": 1.0}]}
    assert api.post("/api/runs/r/metrics", json=batch).status_code == 200
    assert api.get("/api/runs/r").json()["status"] == "RUNNING"


def status_changes(api: TestClient) -> dict[str, float]:
    """trainmon_api_run_status_changes_total by status, from the API's /metrics."""
    prefix = "trainmon_api_run_status_changes_total{status=\""
    return {line[len(prefix):].split('"')[0]: float(line.rsplit(" ", 1)[1])
            for line in api.get("/metrics").text.splitlines() if line.startswith(prefix)}


def test_every_committed_status_change_is_counted_once(api: TestClient) -> None:
    start(api, "counted")  # a new run: RUNNING
    start(api, "counted", rank=1)  # joining a RUNNING run changes nothing
    assert api.post("/api/runs/counted/status", json={"status": "FAILED"}).status_code == 200
    assert api.post("/api/runs/counted/status", json={"status": "FAILED"}).status_code == 200  # a no-op repeat
    start(api, "counted")  # resumed: RUNNING again
    assert api.post("/api/runs/counted/status", json={"status": "CRASHED"}).status_code == 200
    assert api.post("/api/runs/counted/heartbeat").status_code == 204  # revived: RUNNING again
    assert api.post("/api/runs/counted/status", json={"status": "COMPLETED"}).status_code == 200
    assert api.post("/api/runs/counted/status", json={"status": "RUNNING"}).status_code == 409  # refused: not counted
    assert status_changes(api) == {"RUNNING": 3.0, "COMPLETED": 1.0, "FAILED": 1.0, "CRASHED": 1.0}


@pytest.mark.parametrize(("body", "code"), [(None, 204), (b"{}", 204), (b'{"rank": 3}', 204), (b"null", 204),
                                            (b"[]", 422), (b"{", 422)])
def test_a_heartbeat_body_is_an_object_or_nothing(api: TestClient, body: bytes | None, code: int) -> None:
    start(api, "r")
    answer = api.post("/api/runs/r/heartbeat", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == code, answer.text
