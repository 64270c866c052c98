"""The API client's JSON encoding and error classification (no server needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from trainmon.exporter.api_client import ApiClient, ApiError, ApiUnavailable, from_json_value, json_safe, points_json


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
        client.send({"op": "teleport"})
    with pytest.raises(ApiUnavailable):  # nothing listens on port 9
        client.heartbeat("run", timeout=(0.5, 0.5))
    client.close()
