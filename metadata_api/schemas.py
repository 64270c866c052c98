"""Request and response bodies (pydantic v2).

Metric values in JSON are numbers, except non-finite ones: the strings "NaN", "Infinity", "-Infinity"
(`MetricValue` accepts and emits exactly that; JSON's non-standard bare NaN/Infinity tokens are accepted too).
Metric keys are normalised with `trainmon.exporter.naming.normalize_key` (runs of characters outside
[A-Za-z0-9_] become "_"); a key that is empty after normalisation is rejected with 422 naming the field.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    ValidationError,
)
from trainmon.exporter.naming import normalize_key
from typing_extensions import NotRequired, TypedDict

from .models import NAME_LENGTH, RUN_ID_LENGTH, RunStatus

NONFINITE_JSON = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}
_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
T = TypeVar("T")


METRIC_VALUE_MESSAGE = 'a metric value must be a number or one of "NaN", "Infinity", "-Infinity"'
METRIC_KEY_MESSAGE = "metric key must contain letters, digits or '_' (at most 200 after normalisation)"
_UNION_TAGS = ("float", "literal[")


def _parse_metric_value(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(METRIC_VALUE_MESSAGE)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str) and value in NONFINITE_JSON:
        return NONFINITE_JSON[value]
    raise ValueError(METRIC_VALUE_MESSAGE)


def metric_value_json(value: float) -> float | str:
    """A float as the API writes it in JSON."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    return value


def _metric_key(value: str) -> str:
    key = normalize_key(value)
    if key is None:
        raise ValueError(METRIC_KEY_MESSAGE)
    return key


def _run_id(value: str) -> str:
    if not _RUN_ID.match(value):
        raise ValueError("run_id must start with a letter or digit and contain only letters, digits, '_.:-'")
    return value


def _plain_name(value: str) -> str:
    value = value.strip()
    if not value or "/" in value or "\\" in value or value in (".", "..") or any(ord(c) < 32 for c in value):
        raise ValueError("name must be non-empty, without '/', '\\', control characters, and not '.' or '..'")
    return value


def json_safe(value: Any) -> Any:
    """Nested JSON with non-finite floats as the contract's strings (JSON itself has no NaN; PostgreSQL's json
    type rejects it), as the exporter's `json_safe` sends them."""
    if isinstance(value, float) and not math.isfinite(value):
        return metric_value_json(value)
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [json_safe(item) for item in value]
    return value


MetricValue = Annotated[float, BeforeValidator(_parse_metric_value), PlainSerializer(metric_value_json)]
MetricKey = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(_metric_key)]
RunId = Annotated[str, Field(min_length=1, max_length=RUN_ID_LENGTH), AfterValidator(_run_id)]
Name = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(_plain_name)]
BatchId = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]
JsonObject = Annotated[dict[str, Any], AfterValidator(json_safe)]  # params, metrics at save time, metadata


class Page(BaseModel, Generic[T]):
    """A page of a list that can grow: `total` items in all, this page starts at `offset`."""

    items: list[T]
    total: int
    limit: int
    offset: int


# --- runs ---


class RunCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    experiment: Name
    project: Name | None = None
    run_id: RunId | None = None
    host: str | None = Field(None, max_length=NAME_LENGTH)
    pid: int | None = Field(None, ge=0)
    command: str | None = Field(None, max_length=65_536)
    git_commit: str | None = Field(None, max_length=64)
    rank: int | None = Field(None, ge=0)
    world_size: int | None = Field(None, ge=1)
    exporter_url: str | None = Field(None, max_length=1024, pattern=r"^https?://[^\s/]+(/\S*)?$")
    params: JsonObject | None = None
    tags: dict[Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)],
               Annotated[str, Field(max_length=1024)]] | None = None


class EndpointOut(BaseModel):
    """One rank's exporter endpoint (what `/api/sd` gives Prometheus)."""

    rank: int
    url: str
    host: str | None
    updated_at: datetime


class RunOut(BaseModel):
    run_id: str
    experiment_id: int
    experiment: str
    project: str
    status: RunStatus
    start_time: datetime
    end_time: datetime | None
    last_heartbeat: datetime
    host: str | None
    pid: int | None
    command: str | None
    git_commit: str | None
    rank: int | None
    world_size: int | None
    exporter_url: str | None = Field(description="rank 0's exporter endpoint, or the first one registered")
    endpoints: list[EndpointOut] = Field(description="every rank's exporter endpoint, in rank order")
    params: dict[str, Any]
    tags: dict[str, str]


class StatusChange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: RunStatus


class Heartbeat(BaseModel):
    model_config = ConfigDict(extra="allow")


class ParamsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    params: JsonObject


class TagsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tags: dict[Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)], Annotated[str, Field(max_length=1024)]]


# --- metrics ---


class PointIn(TypedDict):
    """One point as sent. A TypedDict validated entirely inside pydantic-core (no model instance, no Python
    callback per point: the ingest hot path); the route normalises `key` once per distinct key and maps the
    non-finite strings to floats."""

    key: Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]
    step: Annotated[int, Field(ge=0, le=2**62)]
    value: Annotated[Annotated[float, Strict()] | Literal["NaN", "Infinity", "-Infinity"],
                     Field(union_mode="left_to_right",
                           description='a number, or "NaN", "Infinity", "-Infinity"')]
    wall_time: NotRequired[Annotated[float | None, Field(ge=0, allow_inf_nan=False,
                                                         description="unix seconds; default: server time")]]


class MetricBatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_id: BatchId
    points: list[PointIn] = Field(min_length=1)


class IngestResult(BaseModel):
    accepted: int
    duplicate: bool


class PointOut(BaseModel):
    run_id: str
    key: str
    step: int
    value: MetricValue
    wall_time: float


# --- experiments ---


class ExperimentOut(BaseModel):
    id: int
    name: str
    project: str
    description: str | None
    created_at: datetime
    run_count: int
    runs_by_status: dict[str, int]
    last_activity: datetime | None


class ExperimentDetail(ExperimentOut):
    """The experiment with a page of its runs in start order (`run_count` runs in all)."""

    runs: list[RunOut]
    limit: int
    offset: int


class ExperimentMetrics(Page[PointOut]):
    experiment_id: int
    keys: list[str]


def parse_json_body(model: type[T], body: bytes) -> T:
    """Validate a raw JSON body straight into `model` (pydantic-core parses and validates in one pass, about 3x
    faster than json.loads + validation); errors are FastAPI's usual 422 with `loc` starting at "body"."""
    from fastapi.exceptions import RequestValidationError

    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise RequestValidationError(_body_errors(error.errors(include_url=False)), body=body) from None


def _body_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Errors located under "body"; the per-member errors of the metric value union become one error."""
    cleaned: dict[tuple[Any, ...], dict[str, Any]] = {}
    for item in errors:
        loc = ("body", *item["loc"])
        if len(loc) > 2 and loc[-2] == "value" and isinstance(loc[-1], str) and loc[-1].startswith(_UNION_TAGS):
            item = {**item, "type": "metric_value", "msg": METRIC_VALUE_MESSAGE, "ctx": None}
            loc = loc[:-1]
        cleaned.setdefault(loc, {**item, "loc": loc})
    return [{key: value for key, value in item.items() if value is not None} for item in cleaned.values()]


def metric_key_error(loc: tuple[Any, ...], value: Any) -> dict[str, Any]:
    return {"type": "metric_key", "loc": loc, "msg": METRIC_KEY_MESSAGE, "input": value}


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` documenting `model` as the JSON request body of a route that parses it itself."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})
    return {"requestBody": {"required": True,
                            "content": {"application/json": {"schema": _inline(schema, definitions)}}}}


def _inline(node: Any, definitions: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        reference = node.get("$ref", "")
        if reference.startswith("#/$defs/"):
            return _inline(definitions[reference.removeprefix("#/$defs/")], definitions)
        return {key: _inline(value, definitions) for key, value in node.items()}
    if isinstance(node, list):
        return [_inline(item, definitions) for item in node]
    return node
