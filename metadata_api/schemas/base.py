"""Field types every resource's bodies share, the page envelope, and the raw-body parsing of the ingest hot path.

Metric values in JSON are numbers, except non-finite ones: the strings "NaN", "Infinity", "-Infinity"
(`trainmon.common.wire`; `MetricValue` accepts and emits exactly that; JSON's non-standard bare NaN/Infinity
tokens are accepted too). Metric keys are normalised with `trainmon.common.naming.normalize_key` (runs of
characters outside [A-Za-z0-9_] become "_"); a key that is empty after normalisation is rejected with 422 naming
the field. Experiment and project names follow the one file-name rule, `trainmon.common.files.check_name`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, TypeVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PlainSerializer, ValidationError
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE, check_name
from trainmon.common.naming import MAX_KEY_LENGTH, normalize_key
from trainmon.common.wire import METRIC_VALUE_MESSAGE, from_json_value, json_safe, json_value

from ..models import NAME_LENGTH, RUN_ID_LENGTH

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
T = TypeVar("T")

METRIC_KEY_MESSAGE = (f"metric key must contain letters, digits or '_' (at most {MAX_KEY_LENGTH} after "
                      "normalisation)")
_UNION_TAGS = ("float", "literal[")


def _metric_key(value: str) -> str:
    key = normalize_key(value)
    if key is None:
        raise ValueError(METRIC_KEY_MESSAGE)
    return key


def _run_id(value: str) -> str:
    if not _RUN_ID.match(value):
        raise ValueError("run_id must start with a letter or digit and contain only letters, digits, '_.:-'")
    return value


MetricValue = Annotated[float, BeforeValidator(from_json_value), PlainSerializer(json_value, return_type=float | str)]
MetricKey = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(_metric_key)]
RunId = Annotated[str, Field(min_length=1, max_length=RUN_ID_LENGTH), AfterValidator(_run_id)]
#: a plain file name (experiment, project): the common rule, stated in the OpenAPI document too
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_BYTES, description=NAME_RULE),
                 AfterValidator(check_name)]
BatchId = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]
JsonObject = Annotated[dict[str, Any], AfterValidator(json_safe)]  # params, metrics at save time, metadata
TagKey = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH)]
TagValue = Annotated[str, Field(max_length=1024)]


class Page(BaseModel, Generic[T]):
    """A page of a list that can grow: `total` items in all, this page starts at `offset`."""

    items: list[T]
    total: int
    limit: int
    offset: int


class IngestResult(BaseModel):
    # The answer to a batch (metric points or log lines): how many were stored, and whether it was a replay.
    accepted: int
    duplicate: bool


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
