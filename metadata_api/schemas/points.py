"""Bodies of metric points: the ingest batch, an experiment's points, one series, a comparison of series."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, Strict, model_validator
from trainmon.common.naming import MAX_KEY_LENGTH
from trainmon.common.wire import METRIC_VALUE_MESSAGE, NONFINITE_JSON
from typing_extensions import NotRequired, TypedDict

from .base import INT32_MAX, KEY_SCHEMA, BatchId, MetricValue, Page

#: the largest step a point may have (leaves room for step arithmetic in SQL within BIGINT)
MAX_STEP = 2**62
#: the largest rank a point may have (ranks of one run are 0 .. world size - 1)
MAX_RANK = INT32_MAX
PointRank = Annotated[int, Strict(), Field(ge=0, le=MAX_RANK, description="the distributed rank that logged the "
                                            "points (0 by default; each rank's history is its own series)")]
#: `?rank=`: one rank's series (the default view is rank 0)
RankQuery = Annotated[int, Query(ge=0, le=MAX_RANK, description="the rank whose series to read")]
#: the strings that stand for non-finite values on the wire ("NaN", "Infinity", "-Infinity")
NonFinite = Literal[tuple(NONFINITE_JSON)]  # type: ignore[valid-type]


Step = Annotated[int, Strict(), Field(ge=0, le=MAX_STEP)]
Value = Annotated[Annotated[float, Strict()] | NonFinite,
                  Field(union_mode="left_to_right", description='a number, or "NaN", "Infinity", "-Infinity"')]
#: a metric key as sent; normalised by the route (`normalize_key`: NUL and other characters outside [A-Za-z0-9_]
#: become "_")
Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH, json_schema_extra=KEY_SCHEMA)]
WallTime = Annotated[Annotated[float, Strict()] | None,
                     Field(ge=0, allow_inf_nan=False, description="unix seconds (absent or null: now)")]


class PointIn(TypedDict):
    """One point as sent. A TypedDict validated entirely inside pydantic-core (no model instance, no Python
    callback per point: the ingest hot path); the route normalises `key` once per distinct key and maps the
    non-finite strings to floats."""

    key: Key
    step: Step
    value: Value
    wall_time: NotRequired[WallTime]


#: One log call: `[step, wall_time, {key: value, ...}]`, the step and wall time of all its values (what the SDK
#: sends: no object per point). Validated inside pydantic-core like `PointIn`.
Row = Annotated[tuple[Step, WallTime, Annotated[dict[Key, Value], Field(min_length=1)]],
                Field(description="[step, wall_time (unix seconds, null: now), {key: value}]: one log call")]


#: the `loc` tags of a value's union members in pydantic's errors
_VALUE_TAGS = ("float", "literal[")


def merge_row_value_errors(errors: Sequence[Any]) -> list[Any]:
    """The per-member errors of a row value's union (number | "NaN"/"Infinity"/"-Infinity") as one error, as for
    point objects (`parse_json_body`): loc ``body, rows, <row>, 2, <key>``."""
    merged: dict[tuple[Any, ...], Any] = {}
    for item in errors:
        loc = tuple(item["loc"])
        if len(loc) == 6 and loc[1] == "rows" and isinstance(loc[5], str) and loc[5].startswith(_VALUE_TAGS):
            loc = loc[:5]
            item = {"type": "metric_value", "loc": loc, "msg": METRIC_VALUE_MESSAGE, "input": item.get("input")}
        merged.setdefault(loc, item)
    return list(merged.values())


def _one_form_schema(schema: dict[str, Any]) -> None:
    for name in ("points", "rows"):
        schema["properties"][name].pop("default", None)
    schema["oneOf"] = [{"required": ["points"]}, {"required": ["rows"]}]


class MetricBatch(BaseModel):
    """A batch of one rank's points, in one of two forms (exactly one): `points`, an object per point, or `rows`,
    one per log call (`trainmon.common.wire`)."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_one_form_schema)

    batch_id: BatchId
    rank: PointRank = 0
    points: list[PointIn] = Field(None, min_length=1)  # type: ignore[assignment] - None: not given
    rows: list[Row] = Field(None, min_length=1)  # type: ignore[assignment] - None: not given

    @model_validator(mode="after")
    def _one_form(self) -> MetricBatch:
        if (self.points is None) == (self.rows is None):
            raise ValueError("a metric batch has either `points` or `rows`")
        return self

    @property
    def point_count(self) -> int:
        if self.points is not None:
            return len(self.points)
        return sum([len(values) for _step, _wall_time, values in self.rows])


class PointOut(BaseModel):
    run_id: str
    rank: int
    key: str
    step: int
    value: MetricValue
    wall_time: float


class ExperimentMetrics(Page[PointOut]):
    experiment_id: int
    keys: list[str]


class SeriesPointOut(BaseModel):
    step: int
    value: MetricValue
    wall_time: float


class SeriesOut(BaseModel):
    run_id: str
    rank: int
    key: str
    reduced: bool
    points: list[SeriesPointOut]
    next_after_step: int | None


class AlignedPoint(BaseModel):
    x: float
    step: int
    value: MetricValue
    wall_time: float


class ComparedSeries(BaseModel):
    run_id: str
    rank: int
    experiment_id: int
    experiment: str
    key: str
    reduced: bool
    points: list[AlignedPoint]


class Comparison(BaseModel):
    align: Literal["step", "time"]
    keys: list[str]
    runs: list[str]
    series: list[ComparedSeries]
