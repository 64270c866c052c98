"""The JSON wire format of metric points between the client and the metadata API.

Metric values are JSON numbers, except non-finite ones, which travel as the strings ``"NaN"``, ``"Infinity"``
and ``"-Infinity"`` (JSON has no NaN; PostgreSQL's json type rejects it). The same encoding applies inside
nested objects (params, checkpoint metrics, artifact metadata). A batch of points carries a ``batch_id`` so
that the API stores a replayed batch only once.

A metric batch holds its points in one of two forms (the API takes both):

- ``"points": [{"key", "step", "value", "wall_time"}, ...]``, one object per point (the spool's form);
- ``"rows": [[step, wall_time, {key: value, ...}], ...]``, one row per `log_metrics` call: the call's step and
  wall time once, and its values by key (what the SDK sends: no object per point on either side).
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

#: the contract's strings for non-finite values, and the floats they stand for
NONFINITE_JSON: dict[str, float] = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
METRIC_VALUE_MESSAGE = 'a metric value must be a number or one of "NaN", "Infinity", "-Infinity"'

#: one point as the exporter hands it to a sink: (key, step, value, wall_time)
Point = tuple[str, int, float, float]
#: one log call as the exporter hands it to the metadata side: (step, wall_time, {normalised key: JSON value}),
#: values already by the contract (finite floats, or the strings for NaN/Inf)
Row = tuple[int, float, dict[str, Any]]


def json_value(value: Any) -> Any:
    """A metric value as JSON: finite floats stay numbers; NaN/±Inf become the contract's strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_json_value(value: Any) -> float:
    """Inverse of `json_value`: a JSON number or one of the contract's strings as a float.

    Raises ValueError for anything else (booleans included: they are not metric values)."""
    if isinstance(value, bool):
        raise ValueError(METRIC_VALUE_MESSAGE)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in NONFINITE_JSON:
        return NONFINITE_JSON[value]
    raise ValueError(METRIC_VALUE_MESSAGE)


def json_safe(value: Any) -> Any:
    """Nested data made JSON-serialisable by the contract: non-finite floats as strings, tuples as lists,
    keys as strings, numpy/torch scalars as numbers, anything else as its ``str``."""
    if isinstance(value, float):
        return json_value(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def points_json(points: Sequence[Point]) -> list[dict[str, Any]]:
    """``(key, step, value, wall_time)`` tuples as the API's point objects."""
    return [{"key": key, "step": step, "value": json_value(float(value)), "wall_time": wall_time}
            for key, step, value, wall_time in points]


def points_rows(points: Sequence[Point]) -> list[Row]:
    """``(key, step, value, wall_time)`` tuples as rows, one per point (in order: the last value for a step wins)."""
    return [(step, wall_time, {key: json_value(float(value))}) for key, step, value, wall_time in points]


def rows_points_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Rows as the API's point objects, in order."""
    return [{"key": key, "step": step, "value": value, "wall_time": wall_time}
            for step, wall_time, values in rows for key, value in values.items()]


def new_batch_id() -> str:
    """A fresh batch id (the API stores a batch id once per run): 32 hex digits, 16 random ones drawn once per
    process (again in a forked child) and a 16-digit counter. Unlike a uuid4 per id, no system call (which would
    give the GIL up, and take it back from a busy training loop, once per batch)."""
    return f"{_batch_ids[0]}{next(_batch_ids[1]):016x}"


def _new_batch_ids() -> None:
    _batch_ids[:] = [uuid.uuid4().hex[:16], itertools.count()]


_batch_ids: list[Any] = []
_new_batch_ids()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_batch_ids)
