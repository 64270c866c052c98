"""GET /api/compare: runs or experiments, chosen keys, aligned by step or by elapsed wall time."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import create_token


def start(api: TestClient, run_id: str, experiment: str, project: str = "default") -> int:
    answer = api.post("/api/runs", json={"experiment": experiment, "project": project, "run_id": run_id})
    assert answer.status_code == 201, answer.text
    return answer.json()["experiment_id"]


def log(api: TestClient, run_id: str, key: str, steps: range, t0: float, value_of=float) -> None:
    points = [{"key": key, "step": s, "value": value_of(s), "wall_time": t0 + 2.0 * s} for s in steps]
    answer = api.post(f"/api/runs/{run_id}/metrics", json={"batch_id": f"{key}-{t0}", "points": points})
    assert answer.status_code == 200, answer.text


@pytest.fixture
def runs(api: TestClient) -> dict[str, int]:
    """a and b in experiment `base` (b started an hour later, from step 50), c in experiment `other`."""
    base = start(api, "a", "base")
    start(api, "b", "base")
    other = start(api, "c", "other")
    log(api, "a", "loss", range(0, 100), 1_000.0, lambda s: 1.0 / (s + 1))
    log(api, "a", "acc", range(0, 100), 1_000.0, lambda s: s / 100)
    log(api, "b", "loss", range(50, 150), 4_600.0, lambda s: 2.0 / (s + 1))
    log(api, "c", "loss", range(0, 10), 9_000.0)
    return {"base": base, "other": other}


def series_of(body: dict) -> dict[tuple[str, str], list[dict]]:
    return {(s["run_id"], s["key"]): s["points"] for s in body["series"]}


def test_compare_runs_by_step(api: TestClient, runs: dict[str, int]) -> None:
    body = api.get("/api/compare", params={"runs": "a,b", "keys": "loss,acc", "align": "step"}).json()
    assert body["align"] == "step" and body["keys"] == ["loss", "acc"] and body["runs"] == ["a", "b"]
    found = series_of(body)
    assert set(found) == {("a", "loss"), ("a", "acc"), ("b", "loss"), ("b", "acc")}
    assert found[("b", "acc")] == []
    assert [p["x"] for p in found[("b", "loss")]] == [float(s) for s in range(50, 150)]
    assert found[("a", "loss")][9] == {"x": 9.0, "step": 9, "value": 0.1, "wall_time": 1018.0}


def test_compare_by_time_starts_every_run_at_zero(api: TestClient, runs: dict[str, int]) -> None:
    body = api.get("/api/compare", params={"runs": "a,b", "keys": "loss", "align": "time"}).json()
    found = series_of(body)
    for run_id in ("a", "b"):
        xs = [p["x"] for p in found[(run_id, "loss")]]
        assert xs[0] == 0.0 and xs[1] == 2.0 and xs[-1] == 198.0


def test_compare_experiments_takes_all_their_runs(api: TestClient, runs: dict[str, int]) -> None:
    body = api.get("/api/compare", params={"experiments": f"{runs['base']},{runs['other']}", "keys": "loss"}).json()
    assert body["runs"] == ["a", "b", "c"]
    assert {s["experiment"] for s in body["series"]} == {"base", "other"}


def test_compare_reduces_each_series_and_keeps_extremes(api: TestClient, runs: dict[str, int]) -> None:
    start(api, "long", "base")
    log(api, "long", "loss", range(0, 5000), 0.0, lambda s: 99.0 if s == 4321 else 1.0)
    body = api.get("/api/compare", params={"runs": "long,a", "keys": "loss", "max_points": 40}).json()
    found = series_of(body)
    assert len(found[("long", "loss")]) <= 40 and any(p["value"] == 99.0 for p in found[("long", "loss")])
    assert {s["run_id"]: s["reduced"] for s in body["series"]} == {"long": True, "a": True}


@pytest.mark.parametrize(("params", "code", "field"), [
    ({"keys": "loss"}, 422, "runs"),
    ({"runs": "a", "experiments": "1", "keys": "loss"}, 422, "runs"),
    ({"runs": "a,zzz", "keys": "loss"}, 404, "zzz"),
    ({"experiments": "abc", "keys": "loss"}, 422, "experiments"),
    ({"experiments": "999", "keys": "loss"}, 404, "999"),
    ({"runs": "a", "keys": "!!!"}, 422, "keys"),
    ({"runs": "a"}, 422, "keys"),
    ({"runs": "a", "keys": "loss", "align": "wall"}, 422, "align"),
])
def test_bad_comparisons_name_the_field(api: TestClient, runs: dict[str, int], params: dict, code: int,
                                        field: str) -> None:
    answer = api.get("/api/compare", params=params)
    assert answer.status_code == code, answer.text
    assert field in answer.text


def test_a_token_cannot_compare_runs_of_another_project(api: TestClient, runs: dict[str, int],
                                                        session_factory: sessionmaker[Session]) -> None:
    start(api, "x1", "private", project="other-team")
    with session_factory() as session:
        token = create_token(session, "other-team", "read")
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/compare", params={"runs": "x1", "keys": "loss"}, headers=headers).status_code == 200
    other = api.get("/api/compare", params={"runs": "x1,a", "keys": "loss"}, headers=headers)
    assert other.status_code == 404 and other.json()["detail"] == "runs: no run 'a'"  # not in this token's project
    assert api.get("/api/compare", params={"runs": "x1", "keys": "loss"}).status_code == 401
