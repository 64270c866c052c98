"""GET /api/runs/{run_id}/metrics/{key} with `min_step`/`max_step`: the range is read in SQL, and its M4 reduction
(from the points for narrow buckets, from the block summaries for wide ones, with ranges that cut blocks) equals the
pure reduction of the points in the range; pages stop at `max_step`."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from test_series import decoded, make_run, noisy_series, post_points, same
from trainmon.metadata_api.reduction import m4_reduce

N_POINTS = 20_000  # steps 0, 2, ..., 39_998


@pytest.fixture
def series(api: TestClient) -> tuple[str, list]:
    run_id = make_run(api, "range-run")
    points = noisy_series(N_POINTS)
    post_points(api, run_id, "loss", points, batch=5_000)
    return run_id, points


@pytest.mark.parametrize(("min_step", "max_step", "max_points"), [
    (1_001, 38_999, 40),     # wide buckets: blocks, with both ends of the range inside a block
    (1_001, 38_999, 2_000),  # narrow buckets: from the points
    (12_341, 12_777, 50),    # a short range inside a few blocks
    (0, 39_998, 100),        # the whole series, given explicitly
    (30_000, None, 60),
    (None, 9_000, 60),
])
def test_range_reduction_equals_the_pure_m4_of_the_range(api: TestClient, series: tuple[str, list],
                                                         min_step: int | None, max_step: int | None,
                                                         max_points: int) -> None:
    run_id, points = series
    params = {"max_points": max_points, "min_step": min_step, "max_step": max_step}
    body = api.get(f"/api/runs/{run_id}/metrics/loss", params={k: v for k, v in params.items() if v is not None})
    assert body.status_code == 200, body.text
    lo, hi = min_step or 0, max_step if max_step is not None else 10**12
    inside = [p for p in points if lo <= p.step <= hi]
    expected = [(p.step, p.value, p.wall_time) for p in m4_reduce(inside, max_points)]
    assert body.json()["reduced"] is (len(inside) > max_points)
    assert same(decoded(body.json()["points"]), expected)


def test_a_short_range_comes_back_whole_and_pages_stop_at_max_step(api: TestClient, series: tuple[str, list]) -> None:
    run_id, points = series
    body = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 500, "min_step": 100, "max_step": 399})
    assert body.json()["reduced"] is False
    assert [p["step"] for p in body.json()["points"]] == list(range(100, 400, 2))
    page = api.get(f"/api/runs/{run_id}/metrics/loss", params={"min_step": 7, "max_step": 21, "limit": 100}).json()
    assert [p["step"] for p in page["points"]] == list(range(8, 22, 2)) and page["next_after_step"] is None
    empty = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 5, "min_step": 10**9})
    assert empty.status_code == 200 and empty.json()["points"] == []
    assert api.get(f"/api/runs/{run_id}/metrics/nope", params={"max_points": 5, "min_step": 1}).status_code == 404
    bad = api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 5, "min_step": 9, "max_step": 3})
    assert bad.status_code == 422 and "max_step" in bad.text
