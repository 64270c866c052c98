"""`routes.points.sdk_batch` + `row_points(checked=False)`: the metric batches the SDK sends are parsed by orjson and
checked by hand; pydantic (`parse_metric_batch`) stays the reference for everything else. The fast way must never
accept a body pydantic refuses nor read one differently: fuzzed bodies either go pydantic's way or give exactly
what pydantic's way gives."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from trainmon.client.records import MetricBatch as SdkBatch
from trainmon.common.naming import MAX_KEY_LENGTH
from trainmon.common.wire import json_value
from trainmon.metadata_api.routes.points import parse_metric_batch, row_points, sdk_points

NOW = 1_700_000_000.5


def pydantic_way(body: bytes) -> Any:
    """(batch_id, rank, points, values given) as the reference reads a rows-form body, or the kind of refusal."""
    try:
        batch = parse_metric_batch(body)
        if batch.rows is None:
            return "points form"
        points, count = row_points(batch.rows, NOW)  # type: ignore[misc]
    except RequestValidationError:
        return "422"
    return batch.batch_id, batch.rank, points, count


def fast_way(body: bytes) -> Any:
    """The same as the fast way reads it, or None where it leaves the body to pydantic."""
    return sdk_points(body, NOW)


def mostly(good: st.SearchStrategy[Any], odd: st.SearchStrategy[Any], weight: int = 9) -> st.SearchStrategy[Any]:
    """`good` `weight` times as often as `odd`: most bodies are valid or nearly so, so both ways get exercised."""
    return st.integers(0, weight).flatmap(lambda draw: odd if draw == weight else good)


KEYS = mostly(st.sampled_from(["loss", "accuracy", "lr", "grad_norm", "train/loss", "a_b", "a.b"]),
              st.sampled_from(["a b", "", "x" * 300, "1st", "é", "k\x00", "___", " loss"]) | st.text(max_size=4))
VALUES = mostly(st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from(["NaN", "Infinity", "-Infinity"]),
                st.floats() | st.integers(-2**70, 2**70) | st.booleans() | st.none() | st.text(max_size=3)
                | st.sampled_from(["nan", "inf", "-inf"]))
STEPS = mostly(st.integers(0, 2**62), st.integers(-3, 2**64) | st.sampled_from([2**62 + 1, -1]) | st.floats()
               | st.booleans() | st.none())
WALLS = mostly(st.none() | st.floats(min_value=0.0, allow_nan=False, allow_infinity=False),
               st.floats() | st.integers(-3, 2**64) | st.booleans() | st.text(max_size=2))
ROWS = mostly(st.tuples(STEPS, WALLS, st.dictionaries(KEYS, VALUES, min_size=1, max_size=4)).map(list),
              st.tuples(STEPS, WALLS, st.just({})).map(list) | st.lists(st.integers(0, 3) | st.none(), max_size=4)
              | st.none() | st.just({"0": 1}))
BATCHES = mostly(
    st.fixed_dictionaries({"batch_id": st.text(min_size=1, max_size=6), "rows": st.lists(ROWS, min_size=1, max_size=5)},
                          optional={"rank": mostly(st.integers(0, 2**31 - 1), st.integers(-2, 2**33) | st.booleans()
                                                   | st.none() | st.floats())}),
    st.fixed_dictionaries({"rows": st.lists(ROWS, max_size=3) | st.none() | st.just({})},
                          optional={"batch_id": st.text(max_size=4) | st.integers() | st.just("x" * 300)
                                    | st.just("b\x00") | st.just("\ud800"),
                                    "points": st.none() | st.just([]), "other": st.just(1)}))


def encoded(batch: dict[str, Any]) -> bytes:
    """JSON as any client may write it: NaN and Infinity tokens, lone surrogates escaped, big integers."""
    return json.dumps(batch).encode()


@settings(max_examples=600, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(mostly(BATCHES.map(encoded), st.binary(max_size=40), weight=4))
@example(b'{"batch_id":"a","rows":[[1,2.0,{"x":3.0,"x":4.0}]],"batch_id":"b"}')  # duplicate names: the last wins
@example(b'{"batch_id":"a","rows":[[1,2.0,{"x":1e400}]]}')  # a number too large for a float
@example(b'{"batch_id":"a","rows":[[1,2.0,{"x":NaN,"y":-Infinity}]]}')
@example(b'{"batch_id":"\\ud800","rows":[[1,2.0,{"x":1.0}]]}')
@example(b'\xef\xbb\xbf{"batch_id":"a","rows":[[1,2.0,{"x":1.0}]]}')  # a byte order mark
@example(b'{"batch_id":"a","rows":[[1,-0.0,{"x":-0.0}]]}')
@example(b'{"batch_id":"a","rows":[[1,2,{"x":3}]]}')  # integers where floats go: pydantic converts them
@example(b'{"batch_id":"a","rows":[[1,2.0,{"x":1.0}]],"other":1}')  # a field the model forbids
@example(b'{"batch_id":"a","rows":[[1,2.0,{"x":1.0}]],"points":null}')  # both forms named
@example(b'{"batch_id":"a","rank":-1,"rows":[[1,2.0,{"x":1.0}]]}')
@example(b'{"batch_id":"a","rank":2147483648,"rows":[[1,2.0,{"x":1.0}]]}')
@example(orjson.dumps({"batch_id": "a", "rows": [[1, 2.0, {" " * MAX_KEY_LENGTH + "x": 1.0}]]}))  # too long as sent
def test_the_fast_way_reads_a_body_as_pydantic_does_or_leaves_it_to_pydantic(body: bytes) -> None:
    fast = fast_way(body)
    if fast is not None:
        assert fast == pydantic_way(body)


@pytest.mark.parametrize("rank", [0, 7])
def test_what_the_sdk_sends_takes_the_fast_way(rank: int) -> None:
    rows = [(step, 1_700_000_000.0 + step, {"loss": json_value(1.0 / (step + 1)), "lr": json_value(3e-4),
                                            "grad_norm": json_value(math.nan if step == 3 else 2.5),
                                            "overflow": json_value(math.inf)})
            for step in range(25)] + [(25, None, {"loss": 0.5})]
    body = orjson.dumps(SdkBatch(run_id="run", batch_id="b-1", rank=rank, rows=rows).rows_body())
    fast = fast_way(body)
    assert fast is not None and fast == pydantic_way(body)
    batch_id, sent_rank, points, count = fast
    assert (batch_id, sent_rank, count, len(points)) == ("b-1", rank, 101, 101)
    assert points[0] == ("loss", 0, 1.0, 0, 1_700_000_000.0) and points[25] == ("loss", 25, 0.5, 0, NOW)
    assert [key for key, *_ in points] == ["loss"] * 26 + ["lr"] * 25 + ["grad_norm"] * 25 + ["overflow"] * 25
    assert points[-1] == ("overflow", 24, None, 2, 1_700_000_024.0)  # +Inf: (no value, special 2)
