"""Batch metric ingest: idempotent retries, exact NaN/Inf, validation (422), size limits (413), unknown run (404),
and one transaction per request."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.models import MetricPoint
from trainmon.metadata_api.repositories import points as point_repo


def start(api: TestClient, run_id: str = "r") -> int:
    response = api.post("/api/runs", json={"experiment": "ingest", "run_id": run_id})
    assert response.status_code in (200, 201), response.text
    return response.json()["experiment_id"]


def batch(batch_id: str, *points: tuple[str, int, object]) -> dict:
    return {"batch_id": batch_id,
            "points": [{"key": key, "step": step, "value": value, "wall_time": 1_700_000_000.0 + step}
                       for key, step, value in points]}


def stored(api: TestClient, experiment_id: int) -> list[tuple[str, int, object]]:
    items = api.get(f"/api/metrics/{experiment_id}", params={"limit": 100_000}).json()["items"]
    return [(p["key"], p["step"], p["value"]) for p in items]


def test_a_replayed_batch_is_stored_once(api: TestClient) -> None:
    experiment_id = start(api)
    body = batch("b-1", ("loss", 1, 0.5), ("loss", 2, 0.25))
    first = api.post("/api/runs/r/metrics", json=body)
    replay = api.post("/api/runs/r/metrics", json=body)
    assert first.json() == {"accepted": 2, "duplicate": False}
    assert replay.status_code == 200 and replay.json() == {"accepted": 2, "duplicate": True}
    assert stored(api, experiment_id) == [("loss", 1, 0.5), ("loss", 2, 0.25)]
    assert "trainmon_api_points_ingested_total 2.0" in api.get("/metrics").text


def test_a_replay_with_other_content_changes_nothing(api: TestClient) -> None:
    experiment_id = start(api)
    api.post("/api/runs/r/metrics", json=batch("b-1", ("loss", 1, 0.5)))
    assert api.post("/api/runs/r/metrics", json=batch("b-1", ("loss", 1, 9.0))).json()["duplicate"] is True
    assert stored(api, experiment_id) == [("loss", 1, 0.5)]


def test_concurrent_replays_store_the_batch_once(api: TestClient) -> None:
    experiment_id = start(api)
    body = batch("same", *(("loss", step, float(step)) for step in range(200)))
    answers: list[dict] = []
    threads = [threading.Thread(target=lambda: answers.append(api.post("/api/runs/r/metrics", json=body).json()))
               for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answer["duplicate"] for answer in answers) == [False, True, True, True]
    assert len(stored(api, experiment_id)) == 200


def test_overlapping_batches_written_at_once_never_deadlock(api: TestClient) -> None:
    """Ranks sending the same (key, step)s in opposite orders at once: every batch is stored (PostgreSQL would
    abort some with a deadlock if rows were not written in one order)."""
    experiment_id = start(api)
    codes: list[int] = []

    def writer(name: str, reverse: bool) -> None:
        for round_ in range(10):
            points = [(f"k{step % 7}", step, float(round_)) for step in range(300)]
            body = batch(f"{name}-{round_}", *(reversed(points) if reverse else points))
            codes.append(api.post("/api/runs/r/metrics", json=body).status_code)

    threads = [threading.Thread(target=writer, args=(f"w{n}", n % 2 == 1)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [200] * 40
    assert len(stored(api, experiment_id)) == 300


def test_batch_ids_are_per_run(api: TestClient) -> None:
    experiment_id = start(api, "a")
    start(api, "b")
    for run_id in ("a", "b"):
        assert api.post(f"/api/runs/{run_id}/metrics", json=batch("b-1", ("loss", 1, 1.0))).json()["duplicate"] is False
    assert len(stored(api, experiment_id)) == 2


def test_a_later_value_for_a_step_replaces_the_earlier_one(api: TestClient) -> None:
    """Natural key (run, key, step): a resumed trainer re-logs steps; the newest value is the history."""
    experiment_id = start(api)
    api.post("/api/runs/r/metrics", json=batch("before-crash", ("loss", 10, 2.0), ("loss", 11, 1.9)))
    api.post("/api/runs/r/metrics", json=batch("after-resume", ("loss", 11, 1.7), ("loss", 12, 1.6)))
    assert stored(api, experiment_id) == [("loss", 10, 2.0), ("loss", 11, 1.7), ("loss", 12, 1.6)]


def test_within_a_batch_the_last_point_for_a_step_wins(api: TestClient) -> None:
    experiment_id = start(api)
    answer = api.post("/api/runs/r/metrics", json=batch("b", ("loss", 1, 1.0), ("loss", 1, 3.0), ("acc", 1, 0.5)))
    assert answer.json() == {"accepted": 2, "duplicate": False}
    assert stored(api, experiment_id) == [("acc", 1, 0.5), ("loss", 1, 3.0)]


def test_non_finite_and_extreme_values_round_trip_exactly(api: TestClient, session_factory: sessionmaker[Session]
                                                          ) -> None:
    experiment_id = start(api)
    values = ["NaN", "Infinity", "-Infinity", 0.0, -1e-300, 5e-324, 1.7976931348623157e308, 0.1 + 0.2, -123456.789e-7]
    api.post("/api/runs/r/metrics", json=batch("b", *(("v", step, value) for step, value in enumerate(values))))
    got = [value for _, _, value in stored(api, experiment_id)]
    assert got[:3] == ["NaN", "Infinity", "-Infinity"]
    assert [repr(v) for v in got[3:]] == [repr(v) for v in values[3:]]
    with session_factory() as session:  # and the database holds them in the documented encoding
        rows = session.execute(select(MetricPoint.step, MetricPoint.value, MetricPoint.special)
                               .order_by(MetricPoint.step)).all()
    assert [(value, special) for _, value, special in rows[:4]] == [(None, 1), (None, 2), (None, 3), (0.0, 0)]


def test_bare_json_nan_and_infinity_tokens_are_accepted(api: TestClient) -> None:
    experiment_id = start(api)
    body = json.dumps(batch("b", ("v", 1, math.nan), ("v", 2, math.inf)))  # Python writes NaN / Infinity
    response = api.post("/api/runs/r/metrics", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 200
    assert stored(api, experiment_id) == [("v", 1, "NaN"), ("v", 2, "Infinity")]


def test_batches_of_only_non_finite_or_integer_values_are_stored(api: TestClient) -> None:
    """The columns of a batch go to the database as arrays on PostgreSQL: an all-NULL value column and integers
    given for floats (JSON `1`, `1e20` as 100000000000000000000) must be stored like any other batch."""
    experiment_id = start(api)
    answer = api.post("/api/runs/r/metrics", json=batch("b1", ("v", 1, "NaN"), ("v", 2, "-Infinity")))
    assert answer.json() == {"accepted": 2, "duplicate": False}
    body = {"batch_id": "b2", "rows": [[3, 1700000000, {"v": 1}], [4, None, {"v": 100000000000000000000}]]}
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 2, "duplicate": False}
    assert stored(api, experiment_id) == [("v", 1, "NaN"), ("v", 2, "-Infinity"), ("v", 3, 1.0), ("v", 4, 1e20)]


def test_keys_are_normalised(api: TestClient) -> None:
    experiment_id = start(api)
    api.post("/api/runs/r/metrics", json=batch("b", ("val/loss", 1, 1.0), ("train.acc", 1, 0.5)))
    assert [key for key, _, _ in stored(api, experiment_id)] == ["train_acc", "val_loss"]


@pytest.mark.parametrize(("point", "field"), [
    ({"key": "loss", "step": 1, "value": "abc"}, "value"),
    ({"key": "loss", "step": 1, "value": True}, "value"),
    ({"key": "loss", "step": 1, "value": None}, "value"),
    ({"key": "///", "step": 1, "value": 1.0}, "key"),
    ({"key": "", "step": 1, "value": 1.0}, "key"),
    ({"key": "loss", "step": -1, "value": 1.0}, "step"),
    ({"key": "loss", "step": 1.5, "value": 1.0}, "step"),
    ({"key": "loss", "step": 1, "value": 1.0, "wall_time": "Infinity"}, "wall_time"),
    ({"step": 1, "value": 1.0}, "key"),
])
def test_bad_points_are_422_naming_the_field(api: TestClient, point: dict, field: str) -> None:
    experiment_id = start(api)
    good = {"key": "ok", "step": 0, "value": 1.0}
    response = api.post("/api/runs/r/metrics", json={"batch_id": "b", "points": [good, point]})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "points", 1, field]]
    assert stored(api, experiment_id) == []  # the good point was not stored either
    assert api.post("/api/runs/r/metrics", json={"batch_id": "b", "points": [good]}).json()["duplicate"] is False


def test_batch_shape_errors_are_422(api: TestClient) -> None:
    start(api)
    for body, field in [({"points": [{"key": "a", "step": 1, "value": 1}]}, ["body", "batch_id"]),
                        ({"batch_id": "b", "points": []}, ["body", "points"])]:
        response = api.post("/api/runs/r/metrics", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == field


def test_unknown_run_is_404(api: TestClient) -> None:
    response = api.post("/api/runs/nobody/metrics", json=batch("b", ("loss", 1, 1.0)))
    assert response.status_code == 404 and "nobody" in response.json()["detail"]


def test_bodies_over_the_limit_are_413(make_api: Callable[..., TestClient]) -> None:
    api = make_api(max_body_bytes=4096)
    experiment_id = start(api)
    big = batch("big", *(("loss", step, 1.0) for step in range(200)))
    assert api.post("/api/runs/r/metrics", json=big).status_code == 413

    def chunks() -> object:  # no Content-Length: the limit is counted while the body streams in
        encoded = json.dumps(big).encode()
        for offset in range(0, len(encoded), 1000):
            yield encoded[offset:offset + 1000]

    response = api.post("/api/runs/r/metrics", content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "4096" in response.json()["detail"]
    small = batch("small", ("loss", 1, 1.0))
    assert api.post("/api/runs/r/metrics", json=small).status_code == 200
    assert stored(api, experiment_id) == [("loss", 1, 1.0)]


def test_too_many_points_in_one_batch_is_413(make_api: Callable[..., TestClient]) -> None:
    api = make_api(max_points_per_batch=10)
    start(api)
    response = api.post("/api/runs/r/metrics", json=batch("b", *(("loss", s, 1.0) for s in range(11))))
    assert response.status_code == 413 and "points" in response.json()["detail"]


def test_a_request_that_fails_midway_leaves_nothing_behind(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Half the points written, then a failure: the batch id and those points roll back; a retry stores all."""
    experiment_id = start(api)
    real_upsert = point_repo.upsert_points

    def fail_after_half(session: Session, run_key: int, rank: int, points: list) -> int:
        real_upsert(session, run_key, rank, points[: len(points) // 2])
        raise RuntimeError("disk on fire")

    body = batch("b", *(("loss", step, float(step)) for step in range(10)))
    monkeypatch.setattr(point_repo, "upsert_points", fail_after_half)
    with pytest.raises(RuntimeError, match="disk on fire"):
        api.post("/api/runs/r/metrics", json=body)
    assert stored(api, experiment_id) == []
    monkeypatch.setattr(point_repo, "upsert_points", real_upsert)
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 10, "duplicate": False}
    assert len(stored(api, experiment_id)) == 10


# --- the rows form: [step, wall_time, {key: value}], one per log call (what the SDK sends) ---

def rows_batch(batch_id: str, *rows: tuple[int, object, dict], rank: int | None = None) -> dict:
    body: dict = {"batch_id": batch_id, "rows": [list(row) for row in rows]}
    if rank is not None:
        body["rank"] = rank
    return body


def test_rows_are_stored_like_points_and_replayed_once(api: TestClient) -> None:
    experiment_id = start(api)
    body = rows_batch("r-1", (1, 1_700_000_001.0, {"loss": 0.5, "val/acc": 1}),
                      (2, None, {"loss": "NaN", "lr": "-Infinity"}))
    first = api.post("/api/runs/r/metrics", json=body)
    assert first.status_code == 200 and first.json() == {"accepted": 4, "duplicate": False}
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 4, "duplicate": True}
    assert stored(api, experiment_id) == [("loss", 1, 0.5), ("loss", 2, "NaN"), ("lr", 2, "-Infinity"),
                                          ("val_acc", 1, 1.0)]
    series = api.get("/api/runs/r/metrics/loss").json()["points"]
    assert series[0]["wall_time"] == 1_700_000_001.0 and series[1]["wall_time"] > 1_700_000_001.0  # null: now


def test_rows_keep_the_rank_and_the_last_value_for_a_step(api: TestClient) -> None:
    start(api)
    body = rows_batch("r", (1, 1.0, {"loss": 1.0, "a b": 1.0}), (1, 2.0, {"loss": 3.0, "a_b": 2.0}), rank=3)
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 2, "duplicate": False}
    points = api.get("/api/runs/r/metrics/loss", params={"rank": 3}).json()["points"]
    assert [(p["step"], p["value"]) for p in points] == [(1, 3.0)]
    assert api.get("/api/runs/r/metrics/a_b", params={"rank": 3}).json()["points"][0]["value"] == 2.0


@pytest.mark.parametrize(("row", "loc"), [
    ([1, 1.0, {"loss": "abc"}], [2, "loss"]),
    ([1, 1.0, {"loss": True}], [2, "loss"]),
    ([1, 1.0, {"loss": None}], [2, "loss"]),
    ([1, 1.0, {"///": 1.0}], [2, "///", "[key]"]),
    ([1, 1.0, {"": 1.0}], [2, "", "[key]"]),
    ([1, 1.0, {}], [2]),
    ([-1, 1.0, {"loss": 1.0}], [0]),
    ([1.5, 1.0, {"loss": 1.0}], [0]),
    ([1, "Infinity", {"loss": 1.0}], [1]),
    ([1, -1.0, {"loss": 1.0}], [1]),
    ([1, 1.0], [2]),
    ([1, 1.0, {"loss": 1.0}, 4], []),
    ({"step": 1, "values": {"loss": 1.0}}, []),
])
def test_bad_rows_are_422_naming_the_row(api: TestClient, row: object, loc: list) -> None:
    experiment_id = start(api)
    good = [0, 1.0, {"ok": 1.0}]
    response = api.post("/api/runs/r/metrics", json={"batch_id": "b", "rows": [good, row]})
    assert response.status_code == 422
    assert [error["loc"] for error in response.json()["detail"]] == [["body", "rows", 1, *loc]]
    assert stored(api, experiment_id) == []
    assert api.post("/api/runs/r/metrics", json={"batch_id": "b", "rows": [good]}).json()["duplicate"] is False


def test_a_batch_has_either_points_or_rows(api: TestClient) -> None:
    start(api)
    point = {"key": "a", "step": 1, "value": 1.0}
    for body, loc in [({"batch_id": "b"}, ["body"]),
                      ({"batch_id": "b", "points": [point], "rows": [[1, 1.0, {"a": 1.0}]]}, ["body"]),
                      ({"batch_id": "b", "rows": []}, ["body", "rows"]),
                      ({"batch_id": "b", "rows": None}, ["body", "rows"]),
                      ({"batch_id": "b", "points": None, "rows": [[1, 1.0, {"a": 1.0}]]}, ["body", "points"])]:
        response = api.post("/api/runs/r/metrics", json=body)
        assert response.status_code == 422 and response.json()["detail"][0]["loc"] == loc, (body, response.text)


def test_too_many_points_in_rows_is_413(make_api: Callable[..., TestClient]) -> None:
    api = make_api(max_points_per_batch=10)
    start(api)
    rows = [(step, 1.0, {"a": 1.0, "b": 2.0}) for step in range(6)]  # 12 points in 6 rows
    response = api.post("/api/runs/r/metrics", json=rows_batch("b", *rows))
    assert response.status_code == 413 and "12 points" in response.json()["detail"]
    assert api.post("/api/runs/r/metrics", json=rows_batch("b", *rows[:5])).status_code == 200


def test_rows_whose_keys_normalise_alike_keep_the_last_value(api: TestClient) -> None:
    """Steps rising row by row, but two keys of one row become the same key: the later one wins, as for points."""
    start(api)
    body = rows_batch("r", (1, 1.0, {"a b": 1.0, "a_b": 2.0, "loss": 0.5}), (2, 2.0, {"a.b": 3.0, "a_b": 4.0}))
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 3, "duplicate": False}
    points = api.get("/api/runs/r/metrics/a_b").json()["points"]
    assert [(p["step"], p["value"]) for p in points] == [(1, 2.0), (2, 4.0)]


def test_batches_of_every_size_around_the_statement_sizes_are_stored_whole(api: TestClient) -> None:
    """SQLite writes a batch in statements of 64, 32, ..., 1 rows (`points._sqlite_upsert`): every size around
    those edges stores every point once, and a batch replacing part of another keeps the last values."""
    experiment_id = start(api)
    sizes = (1, 2, 31, 63, 64, 65, 100, 127, 128, 129, 200)
    first = 0
    for size in sizes:
        body = batch(f"size-{size}", *(("loss", step, step * 0.5) for step in range(first, first + size)))
        assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": size, "duplicate": False}
        first += size
    replaced = batch("replace", *(("loss", step, -1.0) for step in range(50, 150)))
    assert api.post("/api/runs/r/metrics", json=replaced).json() == {"accepted": 100, "duplicate": False}
    assert stored(api, experiment_id) == [("loss", step, -1.0 if 50 <= step < 150 else step * 0.5)
                                          for step in range(first)]
