"""How the API answers what goes wrong, in the shapes its OpenAPI document states.

Every error body is `{detail}`. `detail` is a string naming the field or what went wrong (`run_id: no run 'x'`),
except for 422, where it is always FastAPI's list of `{type, loc, msg, input?}` (`loc` names the field; a route's
own check raises `schemas.invalid(...)`, never an HTTPException with a 422 string).

- `validation_error`: the 422 answer, made JSON-safe (an echoed input may hold NaN or a lone surrogate);
  `http_error` gives a 422 some route raised as a string the same list shape;
- `database_error`: storage unusable (`db.storage_problem`: the SQLite file deleted, replaced or read-only, a
  full disk, the schema missing) or busy/unreachable -> 503 with Retry-After, which the SDK retries, so nothing
  it was told is stored gets lost; any other database error -> 500 `database error: <class>`;
- `document(app)`: the OpenAPI document states, for every operation, the errors of its kind (Host, token, rate
  limit, database; body size and type; unknown run or id), so that routes declare only their own (`error(...)`).
"""

from __future__ import annotations

import json
import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Send

from .db import is_retryable, storage_problem
from .schemas import INT64_MAX, ErrorOut

log = logging.getLogger("trainmon.metadata_api.errors")
BUSY_RETRY_AFTER = "1"
STORAGE_RETRY_AFTER = "5"


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 answer, with echoed inputs that JSON cannot carry (NaN, lone surrogates) made safe."""
    assert isinstance(exc, RequestValidationError)
    errors = [{**item, "ctx": {key: str(value) if isinstance(value, Exception) else value
                               for key, value in item["ctx"].items()}} if isinstance(item.get("ctx"), dict) else item
              for item in exc.errors()]
    return JSONResponse({"detail": _json_safe(jsonable_encoder(errors))}, status_code=422)


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's answer to an HTTPException, except that a 422 raised with a string (`"field: message"`) gets the
    list shape too: one documented shape for every 422, whichever route raised it."""
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 422 and isinstance(exc.detail, str):
        field, _, message = exc.detail.partition(": ")
        loc = [field] if message and " " not in field else ["request"]
        detail = [{"type": "value_error", "loc": loc, "msg": message if loc != ["request"] else exc.detail}]
        return JSONResponse({"detail": _json_safe(detail)}, status_code=422, headers=exc.headers)
    return await http_exception_handler(request, exc)


async def unstorable_text(_request: Request, exc: Exception) -> JSONResponse:
    """422 for text a route passed to the database unchecked (`db.UnstorableText`); the schemas name the field."""
    detail = [{"type": "value_error", "loc": ["request"], "msg": str(exc)}]
    return JSONResponse({"detail": detail}, status_code=422)


async def send_json_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer `status` with the API's error body `{"detail": ...}` from a middleware (extra `headers` added)."""
    body = json.dumps({"detail": detail}).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, dict):
        return {_json_safe(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


def database_answer(exc: Exception) -> tuple[int, str, dict[str, str] | None]:
    """(status, detail, headers) for a database error (see the module docstring)."""
    problem = storage_problem(exc)
    if problem is not None:
        return 503, f"database storage unavailable, retry later: {problem}", {"Retry-After": STORAGE_RETRY_AFTER}
    name = type(exc.__cause__ or exc).__name__
    if is_retryable(exc):  # busy/locked, unreachable, lock timeout: retry later
        return 503, f"database busy or unavailable, retry: {name}", {"Retry-After": BUSY_RETRY_AFTER}
    return 500, f"database error: {name}", None


def error(description: str) -> dict[str, Any]:
    """A route's own `responses=` entry for an error with this description (`{detail}` body)."""
    return {"model": ErrorOut, "description": description}


_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer"}}}
_HOST = "a Host header this API does not answer to (ALLOWED_HOSTS)"
#: (code, description, headers) by kind of operation; what an operation declares itself wins
_EVERY = [(400, _HOST, None)]
_API = [(401, "a token is required (Authorization: Bearer <token>) and none or an unknown one was given", None),
        (403, "the token may not do this (another project's, or a read token writing), or a cross-site write from "
              "a browser", None),
        (429, "too many failed authentications from this address, or writes over WRITES_PER_MINUTE", _RETRY_AFTER),
        (503, "the database is busy, unreachable, or its storage is unusable (file deleted or replaced, read-only, "
              "disk full): retry later", _RETRY_AFTER)]
_BODY = [(400, f"{_HOST}, or a body that is not JSON or not UTF-8 (or an incomplete one)", None),
         (413, "request body over MAX_BODY_BYTES (artifact uploads: MAX_ARTIFACT_BYTES)", None),
         (415, "a body that is not application/json (uploads: multipart/form-data)", None)]
_NAMED = [(404, "nothing with the id(s) the path gives", None)]
_RUN = [(404, "no run with this run_id (in the token's project, or `project`), or nothing with the path's other "
              "ids", None),
        (409, "the run id exists in several projects: give `project`", None)]



def _declared(kinds: list[tuple[int, str, dict[str, Any] | None]]) -> dict[int | str, dict[str, Any]]:
    return {code: {**error(description), **({"headers": headers} if headers else {})}
            for code, description, headers in kinds}


#: the same kinds as `responses=` dicts, for a router or route that states them itself (`document` adds them anyway)
API = _declared(_EVERY + _API)
BODY = _declared(_BODY)
RUN = _declared(_RUN)
EXPERIMENT = _declared(_NAMED)
RUN_BODY = {**BODY, **RUN}


def document(app: FastAPI) -> None:
    """Complete `app`'s OpenAPI document with the answers every operation of a kind can give (`_EVERY`, `_API`
    for `/api`, `_BODY` for one that takes a body, `_NAMED`/`_RUN` for one whose path names something), each an
    `ErrorOut`, so that a route states only its own answers and a new route cannot forget these."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _complete(generate())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _exact_integers(node: Any) -> None:
    """Integer bounds back as integers: FastAPI's OpenAPI model stores them as floats, and the float of
    INT64_MAX is 2**63, one more than any BIGINT."""
    if isinstance(node, dict):
        if node.get("type") == "integer":
            for key in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"):
                value = node.get(key)
                if isinstance(value, float) and value.is_integer():
                    node[key] = INT64_MAX if value == float(INT64_MAX) else int(value)
        for item in node.values():
            _exact_integers(item)
    elif isinstance(node, list):
        for item in node:
            _exact_integers(item)


def _complete(schema: dict[str, Any]) -> None:
    _exact_integers(schema)
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    schemas.setdefault("ErrorOut", ErrorOut.model_json_schema())
    content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}
    for path, operations in schema.get("paths", {}).items():
        for operation in operations.values():
            kinds = list(_EVERY)
            if path.startswith("/api/"):
                kinds += _API
            if "requestBody" in operation:
                kinds += _BODY
            kinds += _RUN if "{run_id}" in path else _NAMED if "{" in path else []
            generic = {str(code): (description, headers) for code, description, headers in kinds}  # last one wins
            answers = operation.setdefault("responses", {})
            for code, (description, headers) in generic.items():
                answer = {"description": description, "content": content, **({"headers": headers} if headers else {})}
                if code not in answers:
                    answers[code] = answer
                elif code == "400":  # a route's own 400 keeps its words and gains the Host case
                    answers[code]["description"] = f"{answers[code].get('description', '')}; or {description}"
