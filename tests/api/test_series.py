"""GET /api/runs/{run_id}/metrics/{key}: the M4 reduction in SQL equals the pure one; paging is exact."""

from __future__ import annotations

import math
import random

import pytest
from fastapi.testclient import TestClient
from trainmon.metadata_api.reduction import SeriesPoint, m4_reduce
from trainmon.metadata_api.schemas import NONFINITE_JSON, metric_value_json

N_POINTS = 20_000
SPECIAL_AT = (0.617, 0.15, 0.39, 0.75)  # where noisy_series puts its spike, -Inf, +Inf and NaN (fraction of count)


def make_run(api: TestClient, run_id: str = "series-run", experiment: str = "series") -> str:
    answer = api.post("/api/runs", json={"experiment": experiment, "run_id": run_id})
    assert answer.status_code in (200, 201), answer.text
    return run_id


def post_points(api: TestClient, run_id: str, key: str, points: list[SeriesPoint], batch: int = 10_000) -> None:
    for start in range(0, len(points), batch):
        chunk = points[start:start + batch]
        body = {"batch_id": f"{key}-{start}", "points": [
            {"key": key, "step": p.step, "value": metric_value_json(p.value), "wall_time": p.wall_time}
            for p in chunk]}
        answer = api.post(f"/api/runs/{run_id}/metrics", json=body)
        assert answer.status_code == 200, answer.text


def noisy_series(count: int, seed: int = 11) -> list[SeriesPoint]:
    rng = random.Random(seed)
    values = [2.0 * math.exp(-i / 4000) + rng.gauss(0, 0.05) for i in range(count)]
    spike, neg_inf, pos_inf, nan = SPECIAL_AT
    values[int(count * spike)] = 50.0  # a one-step spike
    values[int(count * neg_inf)] = -math.inf
    values[int(count * pos_inf)] = math.inf
    values[int(count * nan)] = values[int(count * nan) + 1] = math.nan
    if count > 200:
        values[100:110] = [0.25] * 10  # a repeated value, part of it a bucket minimum
    return [SeriesPoint(step=2 * i, value=v, wall_time=1_000_000.0 + i) for i, v in enumerate(values)]


def decoded(points: list[dict]) -> list[tuple[int, float, float]]:
    return [(p["step"], NONFINITE_JSON.get(p["value"], p["value"]), p["wall_time"]) for p in points]


def same(a: list[tuple[int, float, float]], b: list[tuple[int, float, float]]) -> bool:
    return len(a) == len(b) and all(
        x[0] == y[0] and x[2] == y[2] and (x[1] == y[1] or (math.isnan(x[1]) and math.isnan(y[1])))
        for x, y in zip(a, b, strict=True))


def test_sql_reduction_equals_the_pure_m4_and_keeps_spike_nan_and_inf(api: TestClient) -> None:
    run_id = make_run(api)
    points = noisy_series(N_POINTS)
    post_points(api, run_id, "loss", points)
    for max_points in (5, 250, 2000):
        answer = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": max_points})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["reduced"] is True and body["key"] == "loss" and body["next_after_step"] is None
        expected = [(p.step, p.value, p.wall_time) for p in m4_reduce(points, max_points)]
        assert same(decoded(body["points"]), expected), max_points
        assert len(body["points"]) <= max_points
    view = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 2000}).json()["points"]
    values = {p["step"]: p["value"] for p in view}
    spike, neg_inf, pos_inf, nan = (2 * int(N_POINTS * at) for at in SPECIAL_AT)
    assert values[spike] == 50.0
    assert values[neg_inf] == "-Infinity" and values[pos_inf] == "Infinity" and values[nan] == "NaN"


def test_short_series_comes_back_whole(api: TestClient) -> None:
    run_id = make_run(api)
    points = [SeriesPoint(step=i, value=v, wall_time=10.0 + i) for i, v in enumerate([1.5, math.nan, -math.inf, 3])]
    post_points(api, run_id, "acc", points)
    body = api.get(f"/api/runs/{run_id}/metrics/acc", params={"max_points": 5}).json()
    assert body["reduced"] is False
    assert [p["value"] for p in body["points"]] == [1.5, "NaN", "-Infinity", 3.0]


def test_paging_after_step_returns_every_point_once(api: TestClient) -> None:
    run_id = make_run(api)
    points = noisy_series(3_000, seed=5)
    post_points(api, run_id, "loss", points, batch=1000)
    seen: list[tuple[int, float, float]] = []
    after: int | None = None
    pages = 0
    while True:
        params = {"limit": 700} if after is None else {"limit": 700, "after_step": after}
        body = api.get(f"/api/runs/{run_id}/metrics/loss", params=params).json()
        seen.extend(decoded(body["points"]))
        pages += 1
        after = body["next_after_step"]
        if after is None:
            break
    assert pages == 5
    assert same(seen, [(p.step, p.value, p.wall_time) for p in points])


@pytest.mark.parametrize(("params", "code", "field"), [
    ({"max_points": 4}, 422, "max_points"),
    ({"max_points": 10, "after_step": 5}, 422, "max_points"),
    ({"limit": 0}, 422, "limit"),
])
def test_bad_queries_name_the_field(api: TestClient, params: dict, code: int, field: str) -> None:
    run_id = make_run(api)
    post_points(api, run_id, "loss", noisy_series(20))
    answer = api.get(f"/api/runs/{run_id}/metrics/loss", params=params)
    assert answer.status_code == code
    assert field in answer.text


def test_unknown_run_or_key_is_404(api: TestClient) -> None:
    run_id = make_run(api)
    post_points(api, run_id, "loss", noisy_series(20))
    assert api.get("/api/runs/nope/metrics/loss").status_code == 404
    answer = api.get(f"/api/runs/{run_id}/metrics/lsos")
    assert answer.status_code == 404 and "lsos" in answer.text


def test_steps_beyond_float_precision_reduce_exactly(api: TestClient) -> None:
    """Steps past 2**53 (PostgreSQL then takes the generic GROUP BY + VALUES-join path)."""
    run_id = make_run(api)
    base = 2**60
    points = [SeriesPoint(step=base + 3 * p.step, value=p.value, wall_time=p.wall_time)
              for p in noisy_series(3_000, seed=9)]
    post_points(api, run_id, "loss", points)
    body = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 100}).json()
    assert same(decoded(body["points"]), [(p.step, p.value, p.wall_time) for p in m4_reduce(points, 100)])
