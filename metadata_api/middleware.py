"""`RequestGuard`: every rule a request passes before the app, and every mark on its answer, in one pure-ASGI layer
(one pass over the request's headers, one wrapper around `send`) instead of a stack of middleware each re-reading
the headers and wrapping `send` again. In order:

1. security headers on every answer (`security.add_security_headers`), and the request's latency by route
   template and status (`trainmon_api_request_duration_seconds`), refusals included;
2. Host allowlist: 400 for a Host this API does not answer to (`security.HostAllowlist`, DNS rebinding);
3. cross-site writes: 403 for a POST/PUT/PATCH/DELETE a browser sends from another site's page, unless it carries
   a valid API token (`security.cross_site_reason`);
4. body types: 415 for an `/api` body whose type its operation does not declare (`security.ContentTypes`);
5. rate limits: 429 with Retry-After (`ratelimit.RateLimits`; refused requests above cost no budget), and each
   401 answered costs the client address a unit of its failure budget;
6. gzip for the dashboard charts' reduced series only (`web.compression`);
7. body size: 413 when a body exceeds its limit (`Content-Length`, or counted while it streams in): artifact
   uploads (paths ending in `/artifacts`) `MAX_ARTIFACT_BYTES`, checkpoint file uploads
   (`.../checkpoints/{id}/file`) `MAX_CHECKPOINT_BYTES` plus MULTIPART_OVERHEAD (the route limits the file
   itself), everything else `MAX_BODY_BYTES`.

Then a well-formed trainer write (a metric or log batch, a heartbeat) is answered from here by its endpoint
(`routing.DirectRoutes`, unless OPENTELEMETRY is on; the app's exception handlers answer its errors); every other
request goes on to the app's router.
"""

from __future__ import annotations

import re
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import send_json_error
from .ratelimit import RateLimits, client_address, too_many_answer
from .routing import DirectRoutes, answer_error
from .security import (
    BODY_METHODS,
    WRITE_METHODS,
    ContentTypes,
    HostAllowlist,
    add_security_headers,
    cross_site_reason,
    cross_site_refusal,
    host_refusal,
    valid_token,
)
from .telemetry import ApiMetrics
from .web.compression import chart_gzip, wants_chart_gzip

CHECKPOINT_FILE_PATH = re.compile(r"^/api/runs/[^/]+/checkpoints/[^/]+/file/?$")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around an uploaded file
#: the request headers the rules read, by their ASGI (lower-case) name; the first value of each is kept
_READ_HEADERS = {name.encode(): name for name in ("host", "content-type", "content-length", "transfer-encoding",
                                                  "authorization", "origin", "sec-fetch-site")}


class BodyLimits:
    """The body size limit of a request path (see the module docstring, 7)."""

    def __init__(self, limit: int, artifact_limit: int, checkpoint_limit: int | None = None):
        self.limit = limit
        self.artifact_limit = artifact_limit
        self.checkpoint_limit = limit if checkpoint_limit is None else checkpoint_limit + MULTIPART_OVERHEAD

    def of(self, path: str) -> int:
        if CHECKPOINT_FILE_PATH.match(path):
            return self.checkpoint_limit
        return self.artifact_limit if path.rstrip("/").endswith("/artifacts") else self.limit


def request_headers(scope: Scope) -> dict[str, str]:
    """The headers the rules read (`_READ_HEADERS`), first value of each, decoded as latin-1 like Starlette."""
    found: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = _READ_HEADERS.get(raw_name)
        if name is not None and name not in found:
            found[name] = raw_value.decode("latin-1")
    return found


def _content_length(headers: dict[str, str]) -> int | None:
    try:
        return int(headers["content-length"])
    except (KeyError, ValueError):
        return None


class RequestGuard:
    """The API's one middleware (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, telemetry: ApiMetrics, allowed_hosts: list[str], limits: RateLimits,
                 body_limits: BodyLimits, direct_routes: DirectRoutes | None = None):
        self.app = app
        self.direct_routes = direct_routes
        self.telemetry = telemetry
        self.hosts = HostAllowlist(app, allowed_hosts)
        self.content_types = ContentTypes()
        self.limits = limits
        self.body_limits = body_limits
        self.gzip = chart_gzip(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self.hosts.websocket(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        limits = self.limits
        address = client_address(scope)
        count_failures = limits.failures is not None and limits.applies(scope["path"])

        async def send_out(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                add_security_headers(message)
                if status == 401 and count_failures:
                    limits.failed(address)
            await send(message)

        try:
            await self._guarded(scope, receive, send_out, address)
        finally:
            route = scope.get("route")
            self.telemetry.observe_request(scope["method"], getattr(route, "path", None) or "unmatched", status,
                                           time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send, address: str) -> None:
        headers = request_headers(scope)
        method, path = scope["method"], scope["path"]
        host = headers.get("host")
        if not await self.hosts.allows(host):
            await send_json_error(send, 400, host_refusal(host))
            return
        if method in WRITE_METHODS and (reason := cross_site_reason(headers)) is not None \
                and not await valid_token(scope, headers.get("authorization")):
            await send_json_error(send, 403, cross_site_refusal(method, reason))
            return
        if method in BODY_METHODS and path.startswith("/api/") \
                and (wrong_type := self.content_types.refusal(scope["app"], method, path, headers)) is not None:
            await send_json_error(send, 415, wrong_type)
            return
        if self.limits.applies(path) \
                and (refused := self.limits.refusal(address, method, headers.get("authorization"))) is not None:
            await send_json_error(send, *too_many_answer(*refused))
            return
        limit = self.body_limits.of(path)
        declared = _content_length(headers)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
        app = self.gzip if wants_chart_gzip(scope) else self.app
        direct = self.direct_routes.match(scope) if self.direct_routes is not None and app is self.app else None
        received = 0
        started = rejected = False

        async def counting_receive() -> Message:
            nonlocal received, rejected
            if rejected:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # Answer 413 now; the app sees a client that went away and whatever it sends is dropped.
                    rejected = True
                    if not started:
                        await _too_large(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def app_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        if direct is None:
            await app(scope, counting_receive, app_send)
            return
        try:
            await direct(scope, counting_receive, app_send)
        except Exception as error:
            if started:
                raise
            await answer_error(scope, counting_receive, app_send, error)


async def _too_large(send: Send, limit: int) -> None:
    await send_json_error(send, 413, f"body: request body over the limit of {limit} bytes")
