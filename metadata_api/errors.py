"""How the API answers what goes wrong, in the shapes its OpenAPI document states.

Every error body is `{detail}`. `detail` is a string naming the field or what went wrong (`run_id: no run 'x'`),
except for 422, where it is always FastAPI's list of `{type, loc, msg, input?}` (`loc` names the field; a route's
own check raises `schemas.invalid(...)`, never an HTTPException with a 422 string).

- `validation_error`: the 422 answer, made JSON-safe (an echoed input may hold NaN or a lone surrogate);
  `http_error` gives a 422 some route raised as a string the same list shape;
- `database_error`: storage unusable (`db.storage_problem`: the SQLite file deleted, replaced or read-only, a
  full disk, the schema missing) or busy/unreachable -> 503 with Retry-After, which the SDK retries, so nothing
  it was told is stored gets lost; any other database error -> 500 `database error: <class>`;
- the `responses=` dicts routes declare, by kind: `API` (every `/api` router: Host, token, rate limit,
  database), `BODY` (routes that take a body), `RUN`/`EXPERIMENT` (routes naming one), `LIMITS` (per-run limits).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from .db import is_retryable, storage_problem
from .schemas import ErrorOut

log = logging.getLogger("trainmon.metadata_api.errors")
BUSY_RETRY_AFTER = "1"
STORAGE_RETRY_AFTER = "5"


async def validation_error(_request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 answer, with echoed inputs that JSON cannot carry (NaN, lone surrogates) made safe."""
    assert isinstance(exc, RequestValidationError)
    return JSONResponse({"detail": _json_safe(jsonable_encoder(exc.errors()))}, status_code=422)


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


def error(description: str, **headers: str) -> dict[str, Any]:
    answer: dict[str, Any] = {"model": ErrorOut, "description": description}
    if headers:
        answer["headers"] = {name: {"description": text, "schema": {"type": "integer"}}
                             for name, text in headers.items()}
    return answer


_RETRY = "seconds to wait before retrying"
#: every `/api` router: what any request may meet before or besides its route's own answers
API: dict[int | str, dict[str, Any]] = {
    400: error("a Host header this API does not answer to (ALLOWED_HOSTS), or a body that is not JSON or not "
                "UTF-8"),
    401: error("a token is required (Authorization: Bearer <token>) and none or an unknown one was given"),
    403: error("the token may not do this (another project's, or a read token writing), or a cross-site write "
                "from a browser"),
    429: error("too many failed authentications from this address, or writes over WRITES_PER_MINUTE",
                **{"Retry-After": _RETRY}),
    503: error("the database is busy, unreachable, or its storage is unusable (file deleted or replaced, "
                "read-only, disk full): retry later", **{"Retry-After": _RETRY}),
}
#: routes that take a request body
BODY: dict[int | str, dict[str, Any]] = {
    413: error("request body over MAX_BODY_BYTES"),
    415: error("a body that is not application/json (artifact uploads: multipart/form-data)"),
}
#: routes whose path names a run (`deps.resolve_run`)
RUN: dict[int | str, dict[str, Any]] = {
    404: error("no run with this run_id (in the token's project, or `project`)"),
    409: error("the run id exists in several projects: give `project`"),
}
#: routes that write to a run
RUN_BODY = {**BODY, **RUN}
EXPERIMENT: dict[int | str, dict[str, Any]] = {404: error("no experiment with this id")}
