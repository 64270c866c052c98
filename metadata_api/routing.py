"""The path of the API's most frequent requests: the trainers' metric and log batches and heartbeats (64 ranks
send two or three a second each).

`DirectRoute`: an `APIRoute` that calls its endpoint without FastAPI's per-request machinery (dependency solving,
two exit stacks, the request wrapper): 1.60 -> 1.47 ms of API CPU for a 100-point metric batch.

It applies only to an `async` endpoint whose parameters are the `Request` plus path and query parameters: anything
else (a dependency, a header, cookie or body parameter) is refused when the route is built. A request takes the
direct way when every path parameter and the query string validate with the parameters' own annotated types (the
same pydantic types FastAPI checks) and the query names no parameter twice and nothing unknown; any other request
goes FastAPI's way, so its errors (422 and the rest) are FastAPI's own. Either way it is the same endpoint, the
route's telemetry label and the app's exception handlers are unchanged. The route's router must be included
without router-level dependencies (they would be skipped).

`write_on_loop_or_thread`: such a request's short write transaction on the event loop when that cannot block it;
`store_batch` and `batch_answer`: what the two batch routes do around their own store function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import HTTPException, status
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from .transactions import WriterBusy, can_write_without_waiting

T = TypeVar("T")
#: bodies up to this size may be stored on the event loop (about 2,000 points in the rows form: a few ms at most)
INLINE_MAX_BYTES = 64 * 1024

_NO_DEFAULT = inspect.Parameter.empty


class _Parameter:
    """One path or query parameter: its name in the request, the endpoint's argument, type and default."""

    def __init__(self, alias: str, argument: inspect.Parameter):
        self.alias = alias
        self.name = argument.name
        self.adapter: TypeAdapter[Any] = TypeAdapter(argument.annotation)
        self.default = argument.default


class DirectRoute(APIRoute):
    """See the module docstring."""

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any):
        super().__init__(path, endpoint, **kwargs)
        dependant = self.dependant
        if not inspect.iscoroutinefunction(endpoint) or dependant.request_param_name is None or any(
                (dependant.header_params, dependant.cookie_params, dependant.body_params, dependant.dependencies)):
            raise TypeError(f"DirectRoute {path}: the endpoint must be async and take the Request plus path and "
                            "query parameters only")
        arguments = inspect.signature(endpoint, eval_str=True).parameters
        self._request_name = dependant.request_param_name
        self._path_params = [_Parameter(field.alias, arguments[field.name]) for field in dependant.path_params]
        self._query_params = {field.alias: _Parameter(field.alias, arguments[field.name])
                              for field in dependant.query_params}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        arguments = self._direct_arguments(scope) if scope["method"] in self.methods else None
        if arguments is None:
            await super().handle(scope, receive, send)
            return
        arguments[self._request_name] = Request(scope, receive, send)
        response = await self.endpoint(**arguments)
        await response(scope, receive, send)

    def _direct_arguments(self, scope: Scope) -> dict[str, Any] | None:
        """The endpoint's arguments when every parameter is valid and unambiguous, else None (FastAPI's way)."""
        arguments: dict[str, Any] = {}
        try:
            path_values = scope["path_params"]
            for parameter in self._path_params:
                arguments[parameter.name] = parameter.adapter.validate_python(path_values[parameter.alias])
            given = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
            for alias, value in given:
                parameter = self._query_params.get(alias)
                if parameter is None or parameter.name in arguments:
                    return None
                arguments[parameter.name] = parameter.adapter.validate_python(value)
        except (ValidationError, KeyError):
            return None
        for parameter in self._query_params.values():
            if parameter.name not in arguments:
                if parameter.default is _NO_DEFAULT:
                    return None
                arguments[parameter.name] = parameter.default
        return arguments


async def write_on_loop_or_thread(engine: Engine, write: Callable[..., T], *args: Any, small: bool = True) -> T:
    """`write(*args, wait=...)`, a short write transaction (`transactions.driver_transaction`), on the event loop
    when that cannot block it: a `small` write to a SQLite file while its write lock is free (`wait=False`,
    `transactions.WriterBusy` when not: nothing was done). That saves the hand-off to a worker thread (about 0.25 ms
    of CPU, more than the rest of a small request's Python). Otherwise (a large write, a busy database, PostgreSQL
    with its network round trips) in a worker thread, waiting for the lock there."""
    if small and can_write_without_waiting(engine):
        try:
            return write(*args, wait=False)
        except WriterBusy:
            pass
    return await run_in_threadpool(write, *args)


async def request_body(request: Request) -> bytes:
    """The whole request body; 400 when it did not arrive whole (the client went away, or the body limit already
    answered 413)."""
    try:
        return await request.body()
    except ClientDisconnect:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: incomplete request body") from None


async def store_batch(request: Request, store: Callable[..., tuple[int, bool]], run_id: str,
                      project: str | None) -> tuple[int, bool]:
    """Read a batch's body and `store(request, run_id, project, body, wait=...)` it (`write_on_loop_or_thread`: on
    the event loop when it is small): (accepted, duplicate)."""
    body = await request_body(request)
    return await write_on_loop_or_thread(request.app.state.engine, store, request, run_id, project, body,
                                         small=len(body) <= INLINE_MAX_BYTES)


def batch_answer(accepted: int, duplicate: bool) -> Response:
    """A batch route's answer (`IngestResult`), written as bytes: no response-model pass."""
    return Response(orjson.dumps({"accepted": accepted, "duplicate": duplicate}), media_type="application/json")
