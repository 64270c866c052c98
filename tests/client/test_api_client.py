"""The wire encoding, the typed records and the delivery policy's classification (no server needed)."""

from __future__ import annotations

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
