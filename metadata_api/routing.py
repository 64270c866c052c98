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

`DirectRoutes` (`direct_routes`, unless OPENTELEMETRY is on): matched by the request guard once its checks passed,
so a well-formed request to one of these routes skips the layers below the guard, FastAPI's router included
(about 45 us a request less for the router alone; see `DirectRoutes`).

`write_on_loop_or_thread`: such a request's short write transaction on the event loop when that cannot block it;
`store_batch` and `batch_answer`: what the two batch routes do around their own store function.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import orjson
from fastapi import APIRouter, HTTPException, status
from fastapi.routing import APIRoute
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import get_route_path
from starlette.types import Receive, Scope, Send

from .transactions import WriterBusy, can_write_without_waiting

T = TypeVar("T")
#: bodies up to this size may be stored on the event loop (about 2,000 points in the rows form: a few ms at most)
INLINE_MAX_BYTES = 64 * 1024

_NO_DEFAULT = inspect.Parameter.empty
_UNSEEN = object()  # `DirectRoutes`: a request target not matched before


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


class DirectRoutes:
    """The `DirectRoute`s of the app, matched by the API's request guard (`middleware.RequestGuard`) once its checks
    passed: a well-formed request to one of them (each route's own path regex, methods and parameter checks) is
    answered from there, by the endpoint called directly, without the four layers between the guard and the
    route (Starlette's exception middleware, FastAPI's exit stack, its router, which matches a request twice
    against the included routers' candidates, and the route's own handle). The app's exception handlers answer
    what the endpoint raises (`answer_error`), as the exception middleware would. Anything else matches nothing
    here and takes the usual way, to the same route."""

    #: matches remembered (a bounded table, cleared when full), for request targets up to this long
    MAX_REMEMBERED, REMEMBERED_TARGET = 4096, 512

    def __init__(self, routes: list[DirectRoute]):
        self.routes = routes
        self._known: dict[tuple[str, str, bytes], tuple[DirectRoute, dict[str, Any], dict[str, Any]] | None] = {}

    def match(self, scope: Scope) -> Callable[[Scope, Receive, Send], Awaitable[None]] | None:
        """The call that answers this request, with `scope` completed as the router completes it (endpoint,
        path parameters, route, router), or None when no direct route takes it as it is. A match depends on the
        method, path and query string alone, so the answer for each is remembered: 64 ranks of a run send the
        same three targets, and a repeat costs a lookup, not the route regexes and the parameters' validation."""
        target = (scope["method"], get_route_path(scope), scope["query_string"])
        known = self._known.get(target, _UNSEEN)
        if known is _UNSEEN:
            known = self._match(*target)
            if len(target[1]) + len(target[2]) <= self.REMEMBERED_TARGET:
                if len(self._known) >= self.MAX_REMEMBERED:
                    self._known.clear()
                self._known[target] = known
        if known is None:
            return None
        route, path_params, arguments = known
        scope.update(endpoint=route.endpoint, path_params=dict(path_params), route=route)
        scope.setdefault("router", scope["app"].router)
        return functools.partial(route.call_directly, arguments=dict(arguments))

    def _match(self, method: str, path: str,
               query_string: bytes) -> tuple[DirectRoute, dict[str, Any], dict[str, Any]] | None:
        for route in self.routes:
            if method in route.methods and (found := route.path_regex.match(path)) is not None:
                path_params = {name: route.param_convertors[name].convert(value)
                               for name, value in found.groupdict().items()}
                arguments = route.direct_arguments(path_params, query_string)
                if arguments is not None:
                    return route, path_params, arguments
        return None


def direct_routes(routers: list[APIRouter]) -> DirectRoutes | None:
    """A `DirectRoutes` of the `DirectRoute`s of `routers` (included without a prefix), or None when they have
    none."""
    routes = [route for router in routers for route in router.routes if isinstance(route, DirectRoute)]
    return DirectRoutes(routes) if routes else None


async def answer_error(scope: Scope, receive: Receive, send: Send, error: Exception) -> None:
    """Answer `error`, raised by a directly called endpoint before it started its response, with the app's
    handler for it, as Starlette's exception middleware does (a status code's handler for an HTTPException
    first, then the nearest class's); re-raised when the app has none (a 500, from the server error layer)."""
    handlers = scope["app"].exception_handlers
    handler = handlers.get(error.status_code) if isinstance(error, StarletteHTTPException) \
        and error.status_code != 500 else None  # 500 and Exception: the server error layer's
    if handler is None:
        handler = next((handlers[cls] for cls in type(error).__mro__ if cls in handlers and cls is not Exception),
                       None)
    if handler is None:
        raise error
    request = Request(scope, receive)
    if inspect.iscoroutinefunction(handler):
        response = await handler(request, error)
    else:
        response = await run_in_threadpool(handler, request, error)
    if response is not None:
        await response(scope, receive, send)
    error.__traceback__ = None  # a reused exception instance would gather tracebacks


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
