"""Field types every resource's bodies share, the page envelope, and the raw-body parsing of the ingest hot path.

Metric values in JSON are numbers, except non-finite ones: the strings "NaN", "Infinity", "-Infinity"
(`trainmon.common.wire`; `MetricValue` accepts and emits exactly that; JSON's non-standard bare NaN/Infinity
tokens are accepted too). Metric keys are normalised with `trainmon.common.naming.normalize_key` (runs of
characters outside [A-Za-z0-9_] become "_"); a key longer than `MAX_KEY_LENGTH` or empty after normalisation is
rejected with 422 naming the field. Experiment and project names follow the one file-name rule,
`trainmon.common.files.check_name`.

Nothing a client sends reaches the database unchecked:
- text: every string field is `Text` (or a type built on it), and JSON objects are checked key by key (`JsonObject`):
  NUL characters (PostgreSQL cannot store them) and lone surrogates (not Unicode: neither database can store them)
  are a 422 naming the field; JSON objects nest at most `MAX_JSON_DEPTH` levels;
- integers: bounded by their column (`INT32_MAX` for the server's own ids, `INT64_MAX` for what clients send:
  BIGINT on PostgreSQL, SQLite's INTEGER) and strict in bodies (`StrictCount`...): `true` or `1.0` is no integer;
- both bounds are stated in the OpenAPI document (`pattern`, `minimum`, `maximum`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Generic, TypeVar

from fastapi import HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, PlainSerializer, Strict, ValidationError
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE, check_name
from trainmon.common.naming import MAX_KEY_LENGTH, normalize_key
from trainmon.common.wire import METRIC_VALUE_MESSAGE, from_json_value, json_safe, json_value

from ..models import NAME_LENGTH, RUN_ID_LENGTH

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
_RUN_ID_SCHEMA = {"pattern": _RUN_ID.pattern}
T = TypeVar("T")

#: PostgreSQL INTEGER: the server's own ids (projects, experiments, notes, checkpoints, artifacts)
INT32_MAX = 2**31 - 1
#: PostgreSQL BIGINT and SQLite INTEGER: integers a client sends (steps, epochs, pids, ranks, sizes), offsets
INT64_MAX = 2**63 - 1
#: deepest nesting of a JSON object field (params, checkpoint metrics, artifact metadata)
MAX_JSON_DEPTH = 64
#: what the OpenAPI document states for every text field (the check itself is `check_text`)
NO_NUL_PATTERN = r"^[^\x00]*$"
#: the part of `trainmon.common.files.NAME_RULE` a pattern states simply: no control characters or separators
NAME_PATTERN = r"^[^\x00-\x1f\x7f/\\]+$"
#: longest JSON object sent as text (an artifact's `metadata` form field); MAX_PARAMS_BYTES applies too
MAX_JSON_TEXT = 16 * 1024 * 1024
NUL_MESSAGE = "must not contain NUL (\\x00) characters"
SURROGATE_MESSAGE = "must be valid Unicode (a lone surrogate is not)"

METRIC_KEY_MESSAGE = (f"metric key must contain letters, digits or '_' (at most {MAX_KEY_LENGTH} after "
                      "normalisation)")
_UNION_TAGS = ("float", "literal[")
#: what the OpenAPI document says of a metric key: a letter or digit somewhere (else nothing is left of it)
KEY_SCHEMA = {"pattern": "[A-Za-z0-9]", "description": METRIC_KEY_MESSAGE}


def check_text(value: str) -> str:
    """`value` when the databases can store it: no NUL character, no lone surrogate (ValueError otherwise)."""
    if "\x00" in value:
        raise ValueError(NUL_MESSAGE)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(SURROGATE_MESSAGE) from None
    return value


def text_problem(value: str) -> str | None:
    """Why `check_text` rejects `value`, or None."""
    try:
        check_text(value)
    except ValueError as error:
        return str(error)
    return None


def check_json_object(value: dict[str, Any]) -> dict[str, Any]:
    """A JSON object field made safe to store: every key and string checked (`check_text`, the error names the
    path inside the object), at most `MAX_JSON_DEPTH` levels deep, non-finite floats as the contract's strings."""
    _check_json(value, "", 1)
    return json_safe(value)


def _check_json(value: Any, path: str, depth: int) -> None:
    if isinstance(value, str):
        problem = text_problem(value)
        if problem:
            raise ValueError(f"{path or 'value'}: {problem}")
    elif isinstance(value, (dict, list)):
        if depth > MAX_JSON_DEPTH:
            raise ValueError(f"{path or 'value'}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(value, dict):
            for key, item in value.items():
                problem = text_problem(key) if isinstance(key, str) else None
                if problem:
                    raise ValueError(f"{path or 'value'}: key {key!r} {problem}")
                _check_json(item, f"{path}.{key}" if path else str(key), depth + 1)
        else:
            for index, item in enumerate(value):
                _check_json(item, f"{path}[{index}]", depth + 1)


def _metric_key(value: str) -> str:
    key = normalize_key(value)
    if key is None:
        raise ValueError(METRIC_KEY_MESSAGE)
    return key


def _run_id(value: str) -> str:
    if not _RUN_ID.fullmatch(value):
        raise ValueError("run_id must start with a letter or digit and contain only letters, digits, '_.:-'")
    return value


#: any text a client sends: no NUL, no lone surrogate (lengths are given where it is used)
Text = Annotated[str, AfterValidator(check_text), Field(json_schema_extra={"pattern": NO_NUL_PATTERN})]
MetricValue = Annotated[float, BeforeValidator(from_json_value), PlainSerializer(json_value, return_type=float | str)]
#: a metric key as sent: at most MAX_KEY_LENGTH characters, normalised (`normalize_key`)
MetricKey = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH, json_schema_extra=KEY_SCHEMA),
                      AfterValidator(_metric_key)]
RunId = Annotated[str, Field(min_length=1, max_length=RUN_ID_LENGTH, json_schema_extra=_RUN_ID_SCHEMA),
                  AfterValidator(_run_id)]
#: a plain file name (experiment, project): the common rule, stated in the OpenAPI document too
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_BYTES, description=NAME_RULE,
                            json_schema_extra={"pattern": NAME_PATTERN}),
                 AfterValidator(check_text), AfterValidator(check_name)]
BatchId = Annotated[Text, Field(min_length=1, max_length=NAME_LENGTH)]
#: params, checkpoint metrics, artifact metadata: any JSON object (`check_json_object`)
JsonObject = Annotated[dict[str, Any], AfterValidator(check_json_object),
                       Field(description=f"a JSON object (no NUL characters in keys or strings, at most "
                                         f"{MAX_JSON_DEPTH} levels deep)")]
TagKey = Annotated[str, Field(min_length=1, max_length=NAME_LENGTH), AfterValidator(check_text)]  # a JSON key
TagValue = Annotated[Text, Field(max_length=1024)]
#: integers in JSON bodies: JSON integers only (no `true`, no `1.0`), within BIGINT
StrictCount = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]


class ErrorOut(BaseModel):
    """An error other than 422: `detail` names the field or what went wrong (`run_id: no run 'x'`)."""

    detail: str


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
    faster than json.loads + validation); errors are FastAPI's usual 422 with `loc` starting at "body", and a body
    that is not UTF-8 is FastAPI's usual 400."""
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        errors = error.errors(include_url=False)
        if errors and errors[0]["type"] == "json_invalid" and not _is_utf8(body):
            raise HTTPException(400, "There was an error parsing the body") from None
        raise RequestValidationError(_body_errors(errors), body=body) from None


def _is_utf8(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def invalid(loc: tuple[Any, ...], message: str, value: Any = None) -> RequestValidationError:
    """A 422 in FastAPI's list shape for a check a route makes itself (`loc` names the field, e.g.
    `("query", "runs")`), so that every 422 has the one documented shape."""
    return RequestValidationError([{"type": "value_error", "loc": loc, "msg": message, "input": value}])


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
