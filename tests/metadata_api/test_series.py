"""GET /api/runs/{run_id}/metrics/{key}: the M4 reduction in SQL (from the points, or from the block summaries
that ingest and retention keep) equals the pure one; paging is exact."""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker
from trainmon.common.wire import NONFINITE_JSON, json_value
from trainmon.metadata_api import migrations
from trainmon.metadata_api.db import encode_value, make_engine, write_sessions
from trainmon.metadata_api.models import MetricBlock, Run
from trainmon.metadata_api.reduction import SeriesPoint, bucket_count, bucket_width, m4_reduce
from trainmon.metadata_api.repositories.series_blocks import BLOCK_STEPS, MIN_BLOCKED_WIDTH
from trainmon.metadata_api.services.retention import prune_metric_points

N_POINTS = 20_000
SPECIAL_AT = (0.617, 0.15, 0.39, 0.75)  # where noisy_series puts its spike, -Inf, +Inf and NaN (fraction of count)


def make_run(api: TestClient, run_id: str = "series-run", experiment: str = "series") -> str:
    answer = api.post("/api/runs", json={"experiment": experiment, "run_id": run_id})
    assert answer.status_code in (200, 201), answer.text
    return run_id


def post_points(api: TestClient, run_id: str, key: str, points: list[SeriesPoint], batch: int = 10_000,
                batch_tag: str = "") -> None:
    for start in range(0, len(points), batch):
        chunk = points[start:start + batch]
        body = {"batch_id": f"{key}-{batch_tag}{start}", "points": [
            {"key": key, "step": p.step, "value": json_value(p.value), "wall_time": p.wall_time}
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


# --- the reduction from block summaries (metric_blocks), kept exact by ingest and retention ---------------------

BLOCKED_MAX_POINTS = (5, 50, 250, 500)  # buckets at least MIN_BLOCKED_WIDTH steps wide over noisy_series(N_POINTS)


def expected_blocks(points: list[SeriesPoint]) -> dict[int, tuple]:
    """What metric_blocks must hold for `points`: per block, first/last step, count, finite min/max, first
    NaN/+Inf/-Inf step, oldest wall time."""
    blocks: dict[int, list[SeriesPoint]] = {}
    for p in sorted(points, key=lambda p: p.step):
        blocks.setdefault(p.step // BLOCK_STEPS, []).append(p)
    summary = {}
    for block, members in blocks.items():
        finite = [p.value for p in members if math.isfinite(p.value)]

        def first(test: Callable[[float], bool], members: list[SeriesPoint] = members) -> int | None:
            return next((p.step for p in members if test(p.value)), None)

        summary[block] = (members[0].step, members[-1].step, len(members), min(finite, default=None),
                          max(finite, default=None), first(math.isnan), first(lambda v: v == math.inf),
                          first(lambda v: v == -math.inf), min(p.wall_time for p in members))
    return summary


def stored_blocks(session_factory: sessionmaker[Session], run_id: str, key: str) -> dict[int, tuple]:
    columns = (MetricBlock.first_step, MetricBlock.last_step, MetricBlock.count, MetricBlock.min_value,
               MetricBlock.max_value, MetricBlock.nan_step, MetricBlock.pos_inf_step, MetricBlock.neg_inf_step,
               MetricBlock.min_wall_time)
    with session_factory() as session:
        rows = session.execute(select(MetricBlock.block, *columns).join(Run, Run.key == MetricBlock.run_key)
                               .where(Run.id == run_id, MetricBlock.key == key))
        return {block: tuple(rest) for block, *rest in rows}


def assert_blocked_reduction_is_exact(api: TestClient, run_id: str, key: str, points: list[SeriesPoint]) -> None:
    points = sorted(points, key=lambda p: p.step)
    for max_points in BLOCKED_MAX_POINTS:
        width = bucket_width(points[0].step, points[-1].step, bucket_count(max_points))
        assert width >= MIN_BLOCKED_WIDTH, max_points  # this view is reduced from the blocks
        body = api.get(f"/api/runs/{run_id}/metrics/{key}", params={"max_points": max_points}).json()
        assert body["reduced"] is True
        expected = [(p.step, p.value, p.wall_time) for p in m4_reduce(points, max_points)]
        assert same(decoded(body["points"]), expected), max_points


def with_ties(points: list[SeriesPoint]) -> list[SeriesPoint]:
    """Equal minima and maxima in different blocks of one bucket, and inside one block: the first step wins."""
    values = [p.value for p in points]
    for index in (3000, 3100, 3101, 3350):  # steps 6000..6700: one bucket at every BLOCKED_MAX_POINTS width
        values[index] = -7.5
    for index in (3020, 3040, 3300):
        values[index] = 9.25
    return [SeriesPoint(p.step, v, p.wall_time) for p, v in zip(points, values, strict=True)]


def test_blocked_reduction_equals_the_pure_m4_with_nan_inf_and_ties(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    run_id = make_run(api)
    points = with_ties(noisy_series(N_POINTS))
    post_points(api, run_id, "loss", points, batch=3_333)  # batch edges inside blocks
    assert stored_blocks(session_factory, run_id, "loss") == expected_blocks(points)
    assert_blocked_reduction_is_exact(api, run_id, "loss", points)
    values = {p["step"]: p["value"] for p in
              api.get(f"/api/runs/{run_id}/metrics/loss", params={"max_points": 250}).json()["points"]}
    assert values[2 * int(N_POINTS * SPECIAL_AT[0])] == 50.0 and values[6000] == -7.5 and values[6040] == 9.25


def test_blocks_stay_exact_when_small_batches_append_to_them(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    """Batches of 7 steps, rows form as the SDK sends them: each block is written by many appends, merged into
    its stored row by the upsert (NaN, +-Inf and finite values on either side; older wall times arriving later)."""
    run_id = make_run(api)
    rng = random.Random(5)
    choices = (math.nan, math.inf, -math.inf)
    points = [SeriesPoint(step=3 * i, value=rng.choice(choices) if rng.random() < 0.3 else rng.uniform(-5, 5),
                          wall_time=500_000.0 - i if i % 11 == 0 else 1_000_000.0 + i) for i in range(1400)]
    for start in range(0, len(points), 7):
        rows = [[p.step, p.wall_time, {"loss": json_value(p.value)}] for p in points[start:start + 7]]
        answer = api.post(f"/api/runs/{run_id}/metrics", json={"batch_id": f"append-{start}", "rows": rows})
        assert answer.json() == {"accepted": len(rows), "duplicate": False}
    assert stored_blocks(session_factory, run_id, "loss") == expected_blocks(points)


def test_blocks_stay_exact_when_a_batch_replaces_stored_steps(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    """Last write wins: replaced extremes, NaN and infinities leave no trace in the blocks or the reduction."""
    run_id = make_run(api)
    points = noisy_series(N_POINTS)
    post_points(api, run_id, "loss", points)
    spike, neg_inf, pos_inf, nan = (int(N_POINTS * at) for at in SPECIAL_AT)
    replaced = {spike: 1.0, neg_inf: 0.5, pos_inf: -3.0, nan: 4.0, nan + 1: math.nan, 5_000: -math.inf,
                5_001: 60.0, 101: 0.25}  # 101: one more tie with the repeated 0.25 (steps 200..218)
    replacements = [SeriesPoint(points[i].step, v, 2_000_000.0 + i) for i, v in replaced.items()]
    post_points(api, run_id, "loss", replacements + [SeriesPoint(2 * N_POINTS + 1, 0.0, 3_000_000.0)],
                batch_tag="again-")
    final = {p.step: p for p in points}
    final.update((p.step, p) for p in replacements)
    final[2 * N_POINTS + 1] = SeriesPoint(2 * N_POINTS + 1, 0.0, 3_000_000.0)
    current = sorted(final.values(), key=lambda p: p.step)
    assert stored_blocks(session_factory, run_id, "loss") == expected_blocks(current)
    assert_blocked_reduction_is_exact(api, run_id, "loss", current)


def test_blocks_stay_exact_after_retention_deletes_points(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    """Old points go: whole blocks (deleted with them) and scattered points (their blocks recomputed)."""
    run_id = make_run(api)
    now = time.time()
    old = now - 100 * 86_400

    def aged(index: int, p: SeriesPoint) -> SeriesPoint:
        is_old = index < 4_000 or index % 3 == 0 or index == int(N_POINTS * SPECIAL_AT[0])  # the spike goes too
        return SeriesPoint(p.step, p.value, old + index if is_old else now + index)

    points = [aged(i, p) for i, p in enumerate(with_ties(noisy_series(N_POINTS)))]
    post_points(api, run_id, "loss", points)
    assert prune_metric_points(session_factory, retention_days=30, batch_size=2_500, pause_seconds=0) == sum(
        p.wall_time < now for p in points)
    kept = [p for p in points if p.wall_time >= now]
    assert stored_blocks(session_factory, run_id, "loss") == expected_blocks(kept)
    assert min(stored_blocks(session_factory, run_id, "loss")) == kept[0].step // BLOCK_STEPS
    assert_blocked_reduction_is_exact(api, run_id, "loss", kept)


def test_blocks_stay_exact_under_concurrent_writers(api: TestClient, make_api: Callable[..., TestClient],
                                                    session_factory: sessionmaker[Session]) -> None:
    """Two clients write interleaved steps of the same blocks at once (on PostgreSQL truly concurrently): every
    block ends up summarising both writers' points."""
    run_id = make_run(api)
    clients = [api, make_api()]

    def points_of(writer: int, batch: int) -> list[SeriesPoint]:
        steps = range(batch * 640 + writer, batch * 640 + 640, 2)  # even or odd steps of ten blocks
        return [SeriesPoint(s, float((s * 7919) % 1000) - (900.0 if s % 97 == 0 else 0.0), float(s)) for s in steps]

    def write(writer: int) -> None:
        for batch in range(8):
            post_points(clients[writer], run_id, "loss", points_of(writer, batch), batch_tag=f"w{writer}-{batch}-")

    with ThreadPoolExecutor(max_workers=2) as pool:
        for done in [pool.submit(write, writer) for writer in (0, 1)]:
            done.result()
    everything = sorted((p for writer in (0, 1) for batch in range(8) for p in points_of(writer, batch)),
                        key=lambda p: p.step)
    assert stored_blocks(session_factory, run_id, "loss") == expected_blocks(everything)


def test_migration_0003_builds_the_blocks_of_points_stored_before_it(database_url: str) -> None:
    """A database at revision 0002 with points in it: upgrading fills metric_blocks from them (NaN/Inf included)."""
    engine = make_engine(database_url)
    try:
        migrations.upgrade(engine, "0002")
        points = noisy_series(3_000, seed=3)
        with engine.begin() as connection:
            connection.execute(text("INSERT INTO projects (name, created_at) VALUES ('p', :t)"), {"t": "2026-01-01"})
            connection.execute(text("INSERT INTO experiments (project_id, name, created_at) SELECT id, 'e', :t "
                                    "FROM projects"), {"t": "2026-01-01"})
            connection.execute(text("INSERT INTO runs (id, experiment_id, status, start_time, last_heartbeat, params) "
                                    "SELECT 'old-run', id, 'RUNNING', :t, :t, '{}' FROM experiments"),
                               {"t": "2026-01-01"})
            connection.execute(text("INSERT INTO metric_points (run_id, key, step, value, special, wall_time) "
                                    "VALUES ('old-run', 'loss', :step, :value, :special, :wall_time)"),
                               [{"step": p.step, "value": encode_value(p.value)[0], "special": encode_value(p.value)[1],
                                 "wall_time": p.wall_time} for p in points])
        migrations.upgrade(engine)
        assert stored_blocks(write_sessions(engine), "old-run", "loss") == expected_blocks(points)
    finally:
        engine.dispose()
