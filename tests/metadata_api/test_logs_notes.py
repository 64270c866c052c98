"""Notes (timestamped, listed) and log lines (idempotent batches; GET /api/logs/{experiment_id} paginated)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from fastapi.testclient import TestClient

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


@pytest.fixture
def experiment_id(api: TestClient) -> int:
    for run_id in ("r1", "r2"):
        answer = api.post("/api/runs", json={"experiment": "logged", "run_id": run_id})
        assert answer.status_code == 201
    return answer.json()["experiment_id"]


def lines(count: int, start: int = 0, level: str = "INFO") -> list[dict]:
    return [{"time": (T0 + timedelta(seconds=start + i)).isoformat(), "level": level, "message": f"line {start + i}"}
            for i in range(count)]


def test_notes_are_timestamped_and_listed_in_order(api: TestClient, experiment_id: int) -> None:
    before = datetime.now(timezone.utc)
    first = api.post("/api/runs/r1/notes", json={"text": "lr too high, restarting"})
    assert first.status_code == 201, first.text
    note = first.json()
    assert note["run_id"] == "r1" and note["text"] == "lr too high, restarting"
    assert datetime.fromisoformat(note["created_at"]) >= before - timedelta(seconds=1)
    api.post("/api/runs/r1/notes", json={"text": "second"})
    listed = api.get("/api/runs/r1/notes").json()
    assert [n["text"] for n in listed["items"]] == ["lr too high, restarting", "second"] and listed["total"] == 2
    assert api.get("/api/runs/r2/notes").json()["total"] == 0


@pytest.mark.parametrize(("body", "field"),
                         [({"text": ""}, "text"), ({}, "text"), ({"text": "x", "extra": 1}, "extra")])
def test_bad_notes_are_rejected(api: TestClient, experiment_id: int, body: dict, field: str) -> None:
    answer = api.post("/api/runs/r1/notes", json=body)
    assert answer.status_code == 422 and field in answer.text
    assert api.post("/api/runs/nope/notes", json={"text": "x"}).status_code == 404


def test_log_batches_are_stored_once(api: TestClient, experiment_id: int) -> None:
    batch = {"batch_id": "logs-1", "lines": lines(3)}
    assert api.post("/api/runs/r1/logs", json=batch).json() == {"accepted": 3, "duplicate": False}
    assert api.post("/api/runs/r1/logs", json=batch).json() == {"accepted": 3, "duplicate": True}
    assert api.post("/api/runs/r2/logs", json=batch).json() == {"accepted": 3, "duplicate": False}  # per run
    body = api.get(f"/api/logs/{experiment_id}").json()
    assert body["experiment_id"] == experiment_id and body["total"] == 6
    item = body["items"][0]
    assert datetime.fromisoformat(item["time"]) == T0 and item["level"] == "INFO" and item["message"] == "line 0"


def test_experiment_logs_page_in_time_order_and_filter(api: TestClient, experiment_id: int) -> None:
    api.post("/api/runs/r2/logs", json={"batch_id": "b", "lines": lines(5, start=10, level="warning")})
    api.post("/api/runs/r1/logs", json={"batch_id": "a", "lines": lines(5, start=0)})
    first = api.get(f"/api/logs/{experiment_id}", params={"limit": 4}).json()
    rest = api.get(f"/api/logs/{experiment_id}", params={"limit": 4, "offset": 4}).json()
    messages = [i["message"] for i in first["items"] + rest["items"]]
    assert messages == [f"line {n}" for n in (0, 1, 2, 3, 4, 10, 11, 12)] and first["total"] == 10
    warnings = api.get(f"/api/logs/{experiment_id}", params={"level": "WARNING"}).json()
    assert warnings["total"] == 5 and {i["run_id"] for i in warnings["items"]} == {"r2"}
    assert api.get(f"/api/logs/{experiment_id}", params={"run_id": "r1"}).json()["total"] == 5


@pytest.mark.parametrize(("body", "field"), [
    ({"batch_id": "x", "lines": []}, "lines"),
    ({"batch_id": "x", "lines": [{"time": "yesterday", "level": "INFO", "message": "m"}]}, "time"),
    ({"batch_id": "x", "lines": [{"time": T0.isoformat(), "level": "LOUD", "message": "m"}]}, "level"),
    ({"lines": [{"time": T0.isoformat(), "message": "m"}]}, "batch_id"),
])
def test_bad_log_batches_are_422_and_store_nothing(api: TestClient, experiment_id: int, body: dict,
                                                   field: str) -> None:
    answer = api.post("/api/runs/r1/logs", json=body)
    assert answer.status_code == 422 and field in answer.text
    assert api.get(f"/api/logs/{experiment_id}").json()["total"] == 0


def test_too_many_lines_are_413(make_api, experiment_id: int) -> None:
    small = make_api(max_points_per_batch=2)
    assert small.post("/api/runs/r1/logs", json={"batch_id": "big", "lines": lines(3)}).status_code == 413
    assert small.get(f"/api/logs/{experiment_id}").json()["total"] == 0


def test_unknown_experiment_logs_are_404(api: TestClient) -> None:
    assert api.get("/api/logs/12345").status_code == 404
