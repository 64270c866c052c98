"""Bodies of metric points: the ingest batch, an experiment's points, one series, a comparison of series."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Query
from pydantic import BaseModel, ConfigDict, Field, Strict
from trainmon.common.naming import MAX_KEY_LENGTH
from trainmon.common.wire import NONFINITE_JSON
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


class PointIn(TypedDict):
    """One point as sent. A TypedDict validated entirely inside pydantic-core (no model instance, no Python
    callback per point: the ingest hot path); the route normalises `key` once per distinct key and maps the
    non-finite strings to floats."""

    key: Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH, json_schema_extra=KEY_SCHEMA)]  # normalised
    # by the route (`normalize_key`: NUL and other characters outside [A-Za-z0-9_] become "_")
    step: Annotated[int, Strict(), Field(ge=0, le=MAX_STEP)]
    value: Annotated[Annotated[float, Strict()] | NonFinite,
                     Field(union_mode="left_to_right",
                           description='a number, or "NaN", "Infinity", "-Infinity"')]
    wall_time: NotRequired[Annotated[Annotated[float, Strict()] | None,
                                     Field(ge=0, allow_inf_nan=False, description="unix seconds (default: now)")]]


class MetricBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: BatchId
    rank: PointRank = 0
    points: list[PointIn] = Field(min_length=1)


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
