"""What keeps web pages away from the API: Host allowlist, cross-site writes, content types, security headers.

A token-less API on loopback is reachable by every page the user's browser opens. So:
- `HostAllowlistMiddleware` (Starlette's TrustedHostMiddleware, answering `{detail}`): only the names of
  ALLOWED_HOSTS (default: HOST plus `localhost`, `127.0.0.1`, `::1`) reach the API, which defeats DNS rebinding.
  Bound to every address (0.0.0.0, ::) the server needs ALLOWED_HOSTS (`*` accepts any name, explicitly).
- `CrossSiteWriteMiddleware`: a POST/PUT/PATCH/DELETE that a browser sends from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is not the API's own) is refused (403) unless
  it carries a valid API token. Non-browser clients (the SDK, curl) send neither header and are not affected.
- `ContentTypeMiddleware`: an `/api` body must have the type its operation declares in the OpenAPI document
  (`application/json`; `multipart/form-data` for file uploads), else 415; so an HTML form or a `no-cors` fetch
  (text/plain) cannot carry a body the JSON endpoints accept.
- `SecurityHeadersMiddleware`: `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer` and `CONTENT_SECURITY_POLICY` on every answer (a response that sets its own
  Content-Security-Policy, like `/docs`, keeps it).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.datastructures import Headers
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import auth
from .middleware import send_json_error
from .settings import Settings, split_list

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1", "[::1]")
WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})

#: same-origin scripts, styles, images (and data: images), fetches and forms; nothing inline, no framing
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY",
                    "referrer-policy": "no-referrer", "content-security-policy": CONTENT_SECURITY_POLICY}
_HOST_CHECKED = "trainmon.host_checked"


def allowed_hosts(settings: Settings) -> list[str]:
    """The Host names the API answers: ALLOWED_HOSTS, else HOST plus the loopback names. Raises
    HostsNotConfigured for a bind to every address without ALLOWED_HOSTS (which names clients use is unknown)."""
    given = split_list(settings.allowed_hosts)
    if given:  # an IPv6 address also in brackets, as it comes in a Host header
        return list(dict.fromkeys(name for entry in given for name in (entry, *_bracketed_ipv6(entry))))
    host = settings.host.strip().lower()
    if host.strip("[]") in WILDCARD_BINDS:
        raise auth.HostsNotConfigured(
            f"HOST={settings.host} listens on every address: set ALLOWED_HOSTS to the names clients use to reach "
            "the API (e.g. ALLOWED_HOSTS=trainmon.example.org,10.0.0.5,localhost), or ALLOWED_HOSTS=* to accept any "
            "Host header (then a web page can reach a token-less API through DNS rebinding).")
    bracketed = f"[{host.strip('[]')}]" if ":" in host else host
    return list(dict.fromkeys([bracketed, *LOOPBACK_NAMES]))


def _bracketed_ipv6(entry: str) -> list[str]:
    try:
        return [f"[{entry}]"] if ipaddress.ip_address(entry).version == 6 else []
    except ValueError:
        return []


class HostAllowlistMiddleware:
    """TrustedHostMiddleware whose refusal is the API's error body: 400 `{detail}` naming the Host."""

    def __init__(self, app: ASGIApp, allowed: Sequence[str]):
        self.app = app
        self.trusted = TrustedHostMiddleware(self._through, allowed_hosts=list(allowed), www_redirect=False)

    async def _through(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope[_HOST_CHECKED] = True
        await self.app(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.trusted(scope, receive, send)
            return

        async def refusing_send(message: Message) -> None:
            if scope.get(_HOST_CHECKED):
                await send(message)
            elif message["type"] == "http.response.start":  # TrustedHostMiddleware's plain-text 400
                host = (Headers(scope=scope).get("host") or "")[:100]
                await send_json_error(send, 400, f"host: {host!r} is not a name this API answers to "
                                                 "(ALLOWED_HOSTS)")

        await self.trusted(scope, receive, refusing_send)


def cross_site_reason(headers: Headers) -> str | None:
    """Why this request comes from another site's page (a browser said so), or None."""
    site = headers.get("sec-fetch-site")
    if site in ("cross-site", "same-site"):
        return f"Sec-Fetch-Site: {site}"
    origin = headers.get("origin")
    if origin is not None and not same_origin(origin, headers.get("host")):
        return f"Origin: {origin[:100]}"
    return None


def same_origin(origin: str, host_header: str | None) -> bool:
    """Whether `origin` (scheme://host[:port]) names the host and port this request was sent to (`Host`)."""
    origin_scheme, _, netloc = origin.strip().lower().partition("://")
    if origin_scheme not in ("http", "https") or not netloc or "/" in netloc:
        return False  # "null" (sandboxed frames, file://) included
    origin_host, host = _host_and_port(netloc), _host_and_port(host_header or "")
    if origin_host is None or host is None or origin_host[0] != host[0]:
        return False
    default = 443 if origin_scheme == "https" else 80
    if host[1] is None:  # a proxy may drop a default port; then the origin must use its own default one
        return (origin_host[1] or default) == default
    return (origin_host[1] or default) == host[1]


def _host_and_port(netloc: str) -> tuple[str, int | None] | None:
    """(host, port) of `host[:port]` (IPv6 without brackets, lower case), or None when it does not parse."""
    try:
        parts = urlsplit("//" + netloc.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.username is not None or parts.password is not None:
        return None
    return parts.hostname.lower(), port


class CrossSiteWriteMiddleware:
    """403 for writes a browser sends from another site's page, unless they carry a valid API token."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in WRITE_METHODS:
            headers = Headers(scope=scope)
            reason = cross_site_reason(headers)
            if reason is not None and not await _valid_token(scope, headers):
                await send_json_error(send, 403, f"origin: cross-site {scope['method']} refused ({reason}); "
                                                 "browsers may write only from this API's own pages, other "
                                                 "clients send no Origin header or a valid API token")
                return
        await self.app(scope, receive, send)


async def _valid_token(scope: Scope, headers: Headers) -> bool:
    token = auth.bearer_token(headers.get("authorization"))
    if token is None:
        return False
    sessions = scope["app"].state.read_sessions

    def lookup() -> bool:
        with sessions() as session:
            return auth.resolve_token(session, token) is not None

    return await asyncio.to_thread(lookup)


class ContentTypeMiddleware:
    """415 for an `/api` body whose type is not one its operation declares in the OpenAPI document (JSON for
    almost all; `multipart/form-data` for file uploads). An operation that declares none takes JSON."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._rules: list[tuple[str, re.Pattern[str], tuple[str, ...]]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in BODY_METHODS and scope["path"].startswith("/api/"):
            headers = Headers(scope=scope)
            given = headers.get("content-type")
            expected = self.expected(scope)
            has_body = headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers
            if (given is not None or has_body) and media_type(given) not in expected:
                await send_json_error(send, 415, f"content-type: {scope['method']} {scope['path'][:200]} takes "
                                                 f"{' or '.join(expected)}, got {(given or 'none')[:100]}")
                return
        await self.app(scope, receive, send)

    def expected(self, scope: Scope) -> tuple[str, ...]:
        if self._rules is None:
            self._rules = body_types(scope["app"])
        for method, pattern, types in self._rules:
            if method == scope["method"] and pattern.fullmatch(scope["path"]):
                return types
        return ("application/json",)


def body_types(app: Any) -> list[tuple[str, re.Pattern[str], tuple[str, ...]]]:
    """(method, path pattern, media types) of each operation of `app`'s OpenAPI document that declares a body."""
    rules = []
    for path, operations in app.openapi().get("paths", {}).items():
        pattern = compile_path(path)[0]
        for method, operation in operations.items():
            content = (operation.get("requestBody") or {}).get("content") or {}
            if content:
                rules.append((method.upper(), pattern, tuple(media_type(name) for name in content)))
    return rules


def media_type(content_type: str | None) -> str:
    """`application/json` of `application/json; charset=utf-8` (lower case; '' for none)."""
    return (content_type or "").split(";", 1)[0].strip().lower()


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every answer, keeping any of them the response already set."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self.headers = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message["headers"] = [*message.get("headers", []),
                                      *((n, v) for n, v in self.headers if n not in present)]
            await send(message)

        await self.app(scope, receive, send_with_headers)
