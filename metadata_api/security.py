"""What keeps web pages away from the API: Host allowlist, cross-site writes, content types, security headers.
The rules are applied by `middleware.RequestGuard`, the API's one middleware layer, in this order.

A token-less API on loopback is reachable by every page the user's browser opens. So:
- Host allowlist (`HostAllowlist`: Starlette's TrustedHostMiddleware decides, answered `{detail}`): only the names
  of ALLOWED_HOSTS (default: HOST plus `localhost`, `127.0.0.1`, `::1`) reach the API, which defeats DNS
  rebinding. Bound to every address (0.0.0.0, ::) the server needs ALLOWED_HOSTS (`*` accepts any name,
  explicitly).
- Cross-site writes (`cross_site_reason`): a POST/PUT/PATCH/DELETE that a browser sends from another site
  (`Sec-Fetch-Site: cross-site` or `same-site`, or an `Origin` that is not the API's own) is refused (403) unless
  it carries a valid API token. Non-browser clients (the SDK, curl) send neither header and are not affected.
- Content types (`ContentTypes`): an `/api` body must have the type its operation declares in the OpenAPI
  document (`application/json`; `multipart/form-data` for file uploads), else 415; so an HTML form or a `no-cors`
  fetch (text/plain) cannot carry a body the JSON endpoints accept.
- Security headers (`add_security_headers`): `X-Content-Type-Options: nosniff`, `X-Frame-Options: DENY`,
  `Referrer-Policy: no-referrer` and `CONTENT_SECURITY_POLICY` on every answer (a response that sets its own
  Content-Security-Policy, like `/docs`, keeps it).
"""
from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import auth
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


class HostAllowlist:
    """Whether a Host header names this API: Starlette's TrustedHostMiddleware decides (one rule for every
    Starlette version), and its decision on each Host value seen is remembered (a bounded table), so that a
    request costs a dictionary lookup. Websocket handshakes go through the middleware itself (`websocket`)."""

    MAX_REMEMBERED = 1024

    def __init__(self, app: ASGIApp, allowed: Sequence[str]):
        self.websocket = TrustedHostMiddleware(app, allowed_hosts=list(allowed), www_redirect=False)
        self._decide = TrustedHostMiddleware(self._passed, allowed_hosts=list(allowed), www_redirect=False)
        self._known: dict[str | None, bool] = {}

    async def allows(self, host: str | None) -> bool:
        known = self._known.get(host)
        if known is None:
            scope: dict[str, Any] = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
                                     "headers": [] if host is None else [(b"host", host.encode("latin-1"))]}
            await self._decide(scope, _nothing_received, _discard)
            known = bool(scope.get(_HOST_CHECKED))
            if len(self._known) >= self.MAX_REMEMBERED:
                self._known.clear()
            self._known[host] = known
        return known

    @staticmethod
    async def _passed(scope: Scope, _receive: Receive, _send: Send) -> None:
        scope[_HOST_CHECKED] = True


async def _nothing_received() -> Message:
    return {"type": "http.disconnect"}


async def _discard(_message: Message) -> None:
    return None


def host_refusal(host: str | None) -> str:
    """The 400 detail for a Host header the API does not answer to."""
    return f"host: {(host or '')[:100]!r} is not a name this API answers to (ALLOWED_HOSTS)"


def cross_site_reason(headers: Mapping[str, str]) -> str | None:
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


def cross_site_refusal(method: str, reason: str) -> str:
    """The 403 detail for a cross-site write (`cross_site_reason`) without a valid API token."""
    return (f"origin: cross-site {method} refused ({reason}); browsers may write only from this API's own pages, "
            "other clients send no Origin header or a valid API token")


async def valid_token(scope: Scope, authorization: str | None) -> bool:
    """Whether `authorization` carries a valid API token (looked up in a worker thread: the database)."""
    token = auth.bearer_token(authorization)
    if token is None:
        return False
    sessions = scope["app"].state.read_sessions

    def lookup() -> bool:
        with sessions() as session:
            return auth.resolve_token(session, token) is not None

    return await asyncio.to_thread(lookup)


class ContentTypes:
    """The media types an `/api` body may have: those its operation declares in the OpenAPI document (JSON for
    almost all; `multipart/form-data` for file uploads); an operation that declares none takes JSON. Read from
    the document once, on first use; the answer for each (method, path) is remembered (a bounded table)."""

    MAX_REMEMBERED = 4096

    def __init__(self) -> None:
        self._rules: dict[str, list[tuple[re.Pattern[str], tuple[str, ...]]]] | None = None
        self._known: dict[tuple[str, str], tuple[str, ...]] = {}

    def expected(self, app: Any, method: str, path: str) -> tuple[str, ...]:
        known = self._known.get((method, path))
        if known is not None:
            return known
        if self._rules is None:
            rules: dict[str, list[tuple[re.Pattern[str], tuple[str, ...]]]] = {}
            for rule_method, pattern, types in body_types(app):
                rules.setdefault(rule_method, []).append((pattern, types))
            self._rules = rules
        known = next((types for pattern, types in self._rules.get(method, ()) if pattern.fullmatch(path)),
                     ("application/json",))
        if len(self._known) >= self.MAX_REMEMBERED:
            self._known.clear()
        self._known[(method, path)] = known
        return known

    def refusal(self, app: Any, method: str, path: str, headers: Mapping[str, str]) -> str | None:
        """The 415 detail when this request's body type is not one its operation takes, else None."""
        given = headers.get("content-type")
        has_body = headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers
        if given is None and not has_body:
            return None
        expected = self.expected(app, method, path)
        if media_type(given) in expected:
            return None
        return f"content-type: {method} {path[:200]} takes {' or '.join(expected)}, got {(given or 'none')[:100]}"


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


#: SECURITY_HEADERS as ASGI header pairs
SECURITY_HEADER_PAIRS = tuple((name.encode(), value.encode()) for name, value in SECURITY_HEADERS.items())


def add_security_headers(message: Message) -> None:
    """Add SECURITY_HEADERS to an `http.response.start` message, keeping any of them the response already set."""
    headers = message.get("headers") or []
    present = {name.lower() for name, _ in headers}
    message["headers"] = [*headers, *((name, value) for name, value in SECURITY_HEADER_PAIRS if name not in present)]
