"""A rank is a field of a point: each rank's history of a key is its own series, read by `rank` (default 0) in
series, keys, compare, experiment points and live events; M4 and retention work per rank."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.models import MetricBlock
from trainmon.metadata_api.routes.events import _points_event
from trainmon.metadata_api.services.retention import prune_metric_points


def start(api: TestClient, run_id: str = "r") -> int:
    response = api.post("/api/runs", json={"experiment": "ranks", "run_id": run_id, "world_size": 3})
    assert response.status_code == 201, response.text
    return response.json()["experiment_id"]


def post(api: TestClient, batch_id: str, rank: int | None, points: list[tuple[str, int, float]],
         run_id: str = "r", wall_time: float | None = None) -> None:
    body: dict = {"batch_id": batch_id, "points": [
        {"key": key, "step": step, "value": value, "wall_time": wall_time or 1_700_000_000.0 + step}
        for key, step, value in points]}
    if rank is not None:
        body["rank"] = rank
    answer = api.post(f"/api/runs/{run_id}/metrics", json=body)
    assert answer.status_code == 200, answer.text


def values(api: TestClient, key: str, **params: object) -> dict[int, float]:
    answer = api.get(f"/api/runs/r/metrics/{key}", params=params)
    assert answer.status_code == 200, answer.text
    return {p["step"]: p["value"] for p in answer.json()["points"]}


def test_ranks_logging_the_same_key_and_steps_keep_their_own_series(api: TestClient) -> None:
    start(api)
    post(api, "a", None, [("loss", step, float(step)) for step in range(5)])  # no rank given: rank 0
    post(api, "b", 1, [("loss", step, 100.0 + step) for step in range(5)] + [("grad_norm", 0, 7.0)])
    post(api, "c", 2, [("loss", step, 200.0 + step) for step in range(3)])
    assert values(api, "loss") == {step: float(step) for step in range(5)}
    assert values(api, "loss", rank=1) == {step: 100.0 + step for step in range(5)}
    assert values(api, "loss", rank=2, max_points=10) == {step: 200.0 + step for step in range(3)}
    series = api.get("/api/runs/r/metrics/loss", params={"rank": 1}).json()
    assert series["rank"] == 1 and series["key"] == "loss"
    missing = api.get("/api/runs/r/metrics/grad_norm")
    assert missing.status_code == 404 and "rank 0" in missing.json()["detail"]
    assert api.get("/api/runs/r/keys").json() == {"run_id": "r", "rank": 0, "keys": ["loss"], "ranks": [0, 1, 2]}
    assert api.get("/api/runs/r/keys", params={"rank": 1}).json()["keys"] == ["grad_norm", "loss"]


def test_a_replayed_batch_of_another_rank_is_still_a_replay(api: TestClient) -> None:
    start(api)
    post(api, "same", 1, [("loss", 0, 1.0)])
    answer = api.post("/api/runs/r/metrics", json={"batch_id": "same", "rank": 1,
                                                   "points": [{"key": "loss", "step": 0, "value": 2.0}]})
    assert answer.json()["duplicate"] is True
    assert values(api, "loss", rank=1) == {0: 1.0}


@pytest.mark.parametrize("rank", [-1, 2**31, "1", True, 1.0, None])
def test_a_batch_rank_must_be_a_small_non_negative_integer(api: TestClient, rank: object) -> None:
    start(api)
    answer = api.post("/api/runs/r/metrics", json={"batch_id": "x", "rank": rank,
                                                   "points": [{"key": "loss", "step": 0, "value": 1.0}]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:2] == ["body", "rank"]


@pytest.mark.parametrize("rank", ["-1", "2147483648", "x", "1.5"])
def test_a_rank_query_out_of_range_is_422(api: TestClient, rank: str) -> None:
    start(api)
    for path in ("/api/runs/r/metrics/loss", "/api/runs/r/keys", "/api/runs/r/events"):
        assert api.get(path, params={"rank": rank}).status_code == 422, path


def test_reduction_is_per_rank_and_keeps_one_ranks_spike(api: TestClient) -> None:
    start(api)
    steps = range(0, 4096)
    post(api, "flat", 0, [("loss", step, 1.0) for step in steps])
    post(api, "spiky", 1, [("loss", step, 1000.0 if step == 2777 else 1.0) for step in steps])
    for max_points in (16, 400):  # buckets of blocks (>= 256 steps wide) and of points
        assert 1000.0 in values(api, "loss", rank=1, max_points=max_points).values()
        assert 1000.0 not in values(api, "loss", max_points=max_points).values()
        ranged = values(api, "loss", rank=1, max_points=max_points, min_step=2000, max_step=3000)
        assert ranged[2777] == 1000.0


def test_compare_picks_ranks(api: TestClient) -> None:
    start(api)
    post(api, "a", 0, [("loss", 0, 1.0)])
    post(api, "b", 3, [("loss", 0, 3.0)])
    default = api.get("/api/compare", params={"runs": "r", "keys": "loss"}).json()["series"]
    assert [(s["rank"], s["points"][0]["value"]) for s in default] == [(0, 1.0)]
    every = api.get("/api/compare", params={"runs": "r", "keys": "loss", "ranks": "all"}).json()["series"]
    assert [(s["rank"], s["points"][0]["value"]) for s in every] == [(0, 1.0), (3, 3.0)]
    chosen = api.get("/api/compare", params={"runs": "r", "keys": "loss", "ranks": "3,0,3"}).json()["series"]
    assert [s["rank"] for s in chosen] == [3, 0]
    for bad in ("x", "-1", "\u00b2", "2147483648", ",", "1 2"):
        answer = api.get("/api/compare", params={"runs": "r", "keys": "loss", "ranks": bad})
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", "ranks"], bad


def test_experiment_points_carry_and_filter_by_rank(api: TestClient) -> None:
    experiment_id = start(api)
    post(api, "a", 0, [("loss", 0, 1.0)])
    post(api, "b", 2, [("loss", 0, 2.0)])
    items = api.get(f"/api/metrics/{experiment_id}").json()["items"]
    assert [(p["rank"], p["value"]) for p in items] == [(0, 1.0), (2, 2.0)]
    only = api.get(f"/api/metrics/{experiment_id}", params={"rank": 2}).json()["items"]
    assert [(p["rank"], p["value"]) for p in only] == [(2, 2.0)]


def test_live_points_events_are_per_rank_or_for_every_rank() -> None:
    rows = [(1, 0, "loss", 5, 0.5, 0, 10.0), (2, 1, "loss", 5, 0.7, 0, 10.0), (3, 1, "acc", 5, None, 1, 10.0)]
    assert _points_event(rows, 0) == {"rank": 0, "series": {"loss": [[5, 0.5, 10.0]]}}
    assert _points_event(rows, 1) == {"rank": 1, "series": {"loss": [[5, 0.7, 10.0]], "acc": [[5, "NaN", 10.0]]}}
    assert _points_event(rows, 2) is None
    assert _points_event(rows, None) == {"ranks": {"0": {"loss": [[5, 0.5, 10.0]]},
                                                   "1": {"loss": [[5, 0.7, 10.0]], "acc": [[5, "NaN", 10.0]]}}}


def test_retention_refreshes_the_blocks_of_every_rank(api: TestClient,
                                                       session_factory: sessionmaker[Session]) -> None:
    start(api)
    old = time.time() - 40 * 86_400.0
    post(api, "old", 1, [("loss", step, float(step)) for step in range(100)], wall_time=old)
    post(api, "new", 1, [("loss", step, float(step)) for step in range(100, 110)], wall_time=time.time())
    post(api, "kept", 0, [("loss", step, float(step)) for step in range(100)], wall_time=time.time())
    assert prune_metric_points(session_factory, retention_days=30, batch_size=1000, pause_seconds=0) == 100
    assert list(values(api, "loss", rank=1)) == list(range(100, 110))
    with session_factory() as session:
        blocks = session.execute(select(MetricBlock.rank, MetricBlock.block, MetricBlock.first_step,
                                        MetricBlock.count).order_by(MetricBlock.rank, MetricBlock.block)).all()
    assert [tuple(row) for row in blocks] == [(0, 0, 0, 64), (0, 1, 64, 36), (1, 1, 100, 10)]
