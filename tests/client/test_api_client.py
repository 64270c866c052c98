"""The wire encoding, the typed records and the delivery policy's classification (no server needed)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from trainmon.client.api_client import ApiClient, ApiError, ApiUnavailable
from trainmon.client.delivery import Backoff, Outcome, classify
from trainmon.client.records import AddNote, MetricBatch, RegisterRun, SetStatus, UploadArtifact, decode
from trainmon.common.wire import from_json_value, json_safe, points_json


def test_non_finite_values_use_the_contract_strings_and_round_trip() -> None:
    points = points_json([("a", 0, math.nan, 1.0), ("a", 1, math.inf, 2.0), ("a", 2, -math.inf, 3.0),
                          ("a", 3, 0.5, 4.0)])
    assert [point["value"] for point in points] == ["NaN", "Infinity", "-Infinity", 0.5]
    decoded = [from_json_value(point["value"]) for point in points]
    assert math.isnan(decoded[0]) and decoded[1:] == [math.inf, -math.inf, 0.5]


def test_params_become_json_safe() -> None:
    params = {"lr": np.float32(0.5), "layers": (1, 2), "nested": {"inf": float("inf"), 3: None}, "obj": object}
    safe = json_safe(params)
    assert safe["lr"] == 0.5 and safe["layers"] == [1, 2] and safe["nested"] == {"inf": "Infinity", "3": None}
    assert safe["obj"].startswith("<class")


def test_errors_say_whether_a_retry_can_help() -> None:
    assert ApiError(503, "x").retryable and ApiError(429, "x").retryable and ApiError(408, "x").retryable
    assert not ApiError(422, "x").retryable and not ApiError(409, "x").retryable and not ApiError(404, "x").retryable
    assert ApiUnavailable.retryable


def test_bad_urls_and_ops_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="http"):
        ApiClient("localhost:5000")
    client = ApiClient("http://127.0.0.1:9", token="secret")
    assert client.session.headers["Authorization"] == "Bearer secret"
    with pytest.raises(ValueError, match="unknown record op"):
        decode({"op": "teleport", "run_id": "r"})
    with pytest.raises(ValueError, match="malformed"):
        decode({"op": "note"})  # no run_id
    with pytest.raises(ApiUnavailable):  # nothing listens on port 9
        client.heartbeat("run", timeout=(0.5, 0.5))
    client.close()


def test_every_answer_has_one_outcome() -> None:
    assert classify(ApiUnavailable("down")) is Outcome.RETRY
    assert {classify(ApiError(status, "x")) for status in (500, 503, 408, 425, 429)} == {Outcome.RETRY}
    assert {classify(ApiError(status, "x")) for status in (401, 403)} == {Outcome.UNAUTHORIZED}
    assert {classify(ApiError(status, "x")) for status in (400, 404, 409, 413, 422)} == {Outcome.REJECTED}
    assert classify(FileNotFoundError("gone")) is Outcome.REJECTED
    with pytest.raises(ZeroDivisionError):  # a bug is not an answer: it is raised, never swallowed
        classify(ZeroDivisionError())


def test_records_round_trip_through_their_json_form() -> None:
    records = [RegisterRun("r", {"experiment": "e", "run_id": "r"}), SetStatus("r", "FAILED"), AddNote("r", "hi"),
               UploadArtifact("r", "image", "a.png", "/tmp/a.png", step=3, metadata={"x": 1}),
               MetricBatch("r", batch_id="b1", points=[("loss", 1, math.nan, 2.0)])]
    for record in records:
        data = record.to_json()
        assert data["op"] == record.op and data["run_id"] == "r"
        again = decode(data)
        assert type(again) is type(record) and again.to_json() == data
    assert records[-1].to_json()["points"] == [{"key": "loss", "step": 1, "value": "NaN", "wall_time": 2.0}]
    assert records[-1].point_count() == 1 and not MetricBatch.ordered and SetStatus.ordered
    assert AddNote.rank0_only and not MetricBatch.rank0_only


def test_backoff_doubles_with_full_jitter_up_to_its_maximum() -> None:
    backoff = Backoff(1.0, 4.0)
    delays = [backoff.next_delay() for _ in range(5)]
    assert 0.5 <= delays[0] <= 1.0 and 1.0 <= delays[1] <= 2.0 and all(2.0 <= d <= 4.0 for d in delays[2:])
    backoff.reset()
    assert not backoff.active and backoff.next_delay() <= 1.0


def test_metric_batches_travel_as_rows_and_are_spooled_as_point_objects() -> None:
    rows = [(1, 10.0, {"loss": 0.5, "acc": "NaN"}), (2, 11.0, {"loss": 0.25})]
    batch = MetricBatch("r", batch_id="b1", rows=rows, rank=2)
    assert batch.rows_body() == {"batch_id": "b1", "rank": 2, "rows": rows}
    assert batch.point_count() == 3
    data = batch.to_json()  # the spool's form: what every version of `trainmon sync` reads
    assert "rows" not in data and data["points"] == [
        {"key": "loss", "step": 1, "value": 0.5, "wall_time": 10.0},
        {"key": "acc", "step": 1, "value": "NaN", "wall_time": 10.0},
        {"key": "loss", "step": 2, "value": 0.25, "wall_time": 11.0}]
    again = decode(data)
    assert again.to_json() == data and again.point_count() == 3 and again.rank == 2


class OldApi:
    """An API from before the rows form: it refuses the `rows` field as FastAPI does (an extra field)."""

    def __init__(self) -> None:
        self.points_only = False
        self.batch_limit = None
        self.bodies: list[dict] = []

    def request(self, method: str, path: str, *, json_body: dict) -> dict:
        self.bodies.append(json_body)
        if "rows" in json_body:
            detail = [{"type": "missing", "loc": ["body", "points"], "msg": "Field required", "input": json_body},
                      {"type": "extra_forbidden", "loc": ["body", "rows"], "msg": "Extra inputs are not permitted"}]
            raise ApiError(422, json.dumps(detail)[:500], method, path)
        return {"accepted": len(json_body["points"]), "duplicate": False}


def test_an_api_without_the_rows_form_gets_point_objects() -> None:
    api = OldApi()
    first = MetricBatch("r", batch_id="b1", rows=[(step, 10.0, {"loss": 0.5}) for step in range(100)])
    assert first.send(api) == {"accepted": 100, "duplicate": False}  # type: ignore[arg-type]
    assert [sorted(body) for body in api.bodies] == [["batch_id", "rank", "rows"], ["batch_id", "points", "rank"]]
    assert api.points_only
    MetricBatch("r", batch_id="b2", rows=[(2, 11.0, {"loss": 0.4})]).send(api)  # type: ignore[arg-type]
    assert "points" in api.bodies[-1] and len(api.bodies) == 3  # straight to point objects from now on
    with pytest.raises(ApiError):  # any other 422 is the record's own problem: rejected as before
        MetricBatch("r", rows=[(1, 1.0, {"x": 1.0})]).send(_Refusing())  # type: ignore[arg-type]


class _Refusing:
    points_only = False
    batch_limit = None

    def request(self, method: str, path: str, *, json_body: dict) -> dict:
        raise ApiError(422, '[{"type": "int_type", "loc": ["body", "rows", 0, 0]}]', method, path)


def test_parts_of_a_batch_are_named_by_their_points_in_the_whole() -> None:
    batch = MetricBatch("r", batch_id="B", rows=[(step, 1.0, {"a": 1.0, "b": 2.0}) for step in range(5)], rank=1)
    parts = batch.parts(4)
    assert [(part.batch_id, part.point_count(), part.rank) for part in parts] == [("B:0-4", 4, 1), ("B:4-8", 4, 1),
                                                                                 ("B:8-10", 2, 1)]
    assert [part.batch_id for part in parts[1].parts(2)] == ["B:4-6", "B:6-8"]  # as if cut from the whole
    assert [part.batch_id for part in batch.parts(2)][2:4] == ["B:4-6", "B:6-8"]
    wide = MetricBatch("r", batch_id="W", rows=[(7, 1.0, {f"k{index}": 1.0 for index in range(5)})])
    assert [part.rows for part in wide.parts(2)][-1] == [(7, 1.0, {"k4": 1.0})]  # one call, cut by its keys
