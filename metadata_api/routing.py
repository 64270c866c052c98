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

`DirectRoutes` (`install_direct_routes`, unless OPENTELEMETRY is on): the app router's first entry, which matches a
well-formed request to one of these routes before FastAPI's router does (about 45 us a request less).

`write_on_loop_or_thread`: such a request's short write transaction on the event loop when that cannot block it;
`store_batch` and `batch_answer`: what the two batch routes do around their own store function.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, FastAPI, HTTPException, status
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import URLPath
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, NoMatchFound, get_route_path
from starlette.types import Receive, Scope, Send

from .transactions import WriterBusy, can_write_without_waiting

T = TypeVar("T")
#: bodies up to this size may be stored on the event loop (about 2,000 points in the rows form: a few ms at most)
INLINE_MAX_BYTES = 64 * 1024

_NO_DEFAULT = inspect.Parameter.empty
_ARGUMENTS = "trainmon.direct_arguments"  # the scope key a `DirectRoutes` match leaves its endpoint's arguments in


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
        arguments = self.direct_arguments(scope["path_params"], scope["query_string"]) \
            if scope["method"] in self.methods else None
        if arguments is None:
            await super().handle(scope, receive, send)
            return
        await self.call_directly(scope, receive, send, arguments)

    async def call_directly(self, scope: Scope, receive: Receive, send: Send, arguments: dict[str, Any]) -> None:
        """The endpoint called with `arguments` (`direct_arguments`) and the request."""
        arguments[self._request_name] = Request(scope, receive, send)
        response = await self.endpoint(**arguments)
        await response(scope, receive, send)

    def direct_arguments(self, path_values: dict[str, Any], query_string: bytes) -> dict[str, Any] | None:
        """The endpoint's arguments when every parameter is valid and unambiguous, else None (FastAPI's way)."""
        arguments: dict[str, Any] = {}
        try:
            for parameter in self._path_params:
                arguments[parameter.name] = parameter.adapter.validate_python(path_values[parameter.alias])
            for alias, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
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


class DirectRoutes(BaseRoute):
    """The app router's first entry (`install_direct_routes`): a well-formed request to one of the `DirectRoute`s
    (each route's own path regex, methods and parameter checks) is matched here and its endpoint called directly.
    That skips FastAPI's router, which matches a request twice against the included routers' candidates (about
    45 us a request). Anything else matches nothing here and takes the usual way, to the same route."""

    def __init__(self, routes: list[DirectRoute]):
        self.routes = routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] == "http":
            path, method = get_route_path(scope), scope["method"]
            for route in self.routes:
                if method in route.methods and (found := route.path_regex.match(path)) is not None:
                    path_params = {**scope.get("path_params", {}),
                                   **{name: route.param_convertors[name].convert(value)
                                      for name, value in found.groupdict().items()}}
                    arguments = route.direct_arguments(path_params, scope["query_string"])
                    if arguments is not None:
                        return Match.FULL, {"endpoint": route.endpoint, "path_params": path_params, "route": route,
                                            _ARGUMENTS: arguments}
        return Match.NONE, {}

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        await scope["route"].call_directly(scope, receive, send, scope.pop(_ARGUMENTS))

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        raise NoMatchFound(name, path_params)  # the routes themselves answer for their names


def install_direct_routes(app: FastAPI, routers: list[APIRouter]) -> None:
    """Put a `DirectRoutes` of the `DirectRoute`s of `routers` (included without a prefix) first in `app`'s
    router."""
    routes = [route for router in routers for route in router.routes if isinstance(route, DirectRoute)]
    if routes:
        app.router.routes.insert(0, DirectRoutes(routes))


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
