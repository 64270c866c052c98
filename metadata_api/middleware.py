"""Pure ASGI middleware: request size limit (413) and request telemetry (latency by route template); the
browser and host rules are in `security.py`, rate limits in `ratelimit.py`."""

from __future__ import annotations

import json
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .telemetry import ApiMetrics

CHECKPOINT_FILE_PATH = re.compile(r"^/api/runs/[^/]+/checkpoints/[^/]+/file/?$")
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and part headers around an uploaded file


class BodyLimitMiddleware:
    """Answer 413 when a request body exceeds its limit (`Content-Length`, or counted while streaming).

    Artifact uploads (paths ending in `/artifacts`) get `artifact_limit`; checkpoint file uploads
    (`.../checkpoints/{id}/file`) `checkpoint_limit` plus MULTIPART_OVERHEAD (the route limits the file itself);
    everything else `limit`.
    """

    def __init__(self, app: ASGIApp, limit: int, artifact_limit: int, checkpoint_limit: int | None = None):
        self.app = app
        self.limit = limit
        self.artifact_limit = artifact_limit
        self.checkpoint_limit = limit if checkpoint_limit is None else checkpoint_limit + MULTIPART_OVERHEAD

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.artifact_limit if scope["path"].rstrip("/").endswith("/artifacts") else self.limit
        if CHECKPOINT_FILE_PATH.match(scope["path"]):
            limit = self.checkpoint_limit
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, limit)
            return
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

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if rejected:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, limit: int) -> None:
    await send_json_error(send, 413, f"body: request body over the limit of {limit} bytes")


async def send_json_error(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    """Answer `status` with the API's error body `{"detail": ...}` from a middleware (extra `headers` added)."""
    body = json.dumps({"detail": detail}).encode()
    extra = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *extra]})
    await send({"type": "http.response.body", "body": body})


class RequestMetricsMiddleware:
    """Observe `trainmon_api_request_duration_seconds{method,route,status}`; route is the path template."""

    def __init__(self, app: ASGIApp, telemetry: ApiMetrics):
        self.app = app
        self.telemetry = telemetry

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status_box: dict[str, Any] = {"status": 500}

        async def recording_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.telemetry.request_duration.labels(scope["method"], template, str(status_box["status"])).observe(
                time.perf_counter() - start)
