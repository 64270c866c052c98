"""The browser's credentials for the dashboard.

With tokens configured, the login page posts a token once (`POST /api/session`, JSON); the API keeps it in the
`trainmon_token` cookie (HttpOnly: no script can read it; SameSite=Strict: no other site's page sends it; Secure
over HTTPS) and every page and `/api` call of the browser is authorised by it, with the token's project and scope
(a read token can look, a write token can also add notes and tags). Writes authorised by the cookie also need
the CSRF double-submit token: the `trainmon_csrf` cookie (readable by the page's script) echoed in the
`X-CSRF-Token` header, which another site cannot read or set; `middleware.RequestGuard` refuses
cross-site writes as well. An `Authorization: Bearer` header always wins over the cookie.

With no token configured the API is open (and bound to loopback): the pages need no login.
"""

from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import HTTPException, Request, Response, status
from sqlalchemy.orm import Session

from .. import auth

TOKEN_COOKIE = "trainmon_token"
CSRF_COOKIE = "trainmon_csrf"
CSRF_HEADER = "x-csrf-token"
COOKIE_MAX_AGE = 30 * 24 * 3600


def cookie_token(request: Request) -> str | None:
    token = request.cookies.get(TOKEN_COOKIE, "").strip()
    return token or None


def check_csrf(request: Request) -> None:
    """403 unless the request echoes the CSRF cookie in its X-CSRF-Token header (double submit)."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    header = request.headers.get(CSRF_HEADER, "")
    if not cookie or not hmac.compare_digest(cookie.encode(), header.encode()):
        raise HTTPException(status.HTTP_403_FORBIDDEN,
                            "csrf: a write authorised by the session cookie needs the X-CSRF-Token header")


def _secure(request: Request) -> bool:
    return request.url.scheme == "https"


def ensure_csrf_cookie(request: Request, response: Response) -> None:
    """Give the browser a CSRF token when it has none (the pages' script sends it with every write)."""
    if not request.cookies.get(CSRF_COOKIE):
        response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), max_age=COOKIE_MAX_AGE, path="/",
                            samesite="strict", secure=_secure(request), httponly=False)


def start(request: Request, response: Response, token: str) -> None:
    """Keep `token` in the session cookie, with a fresh CSRF token."""
    response.set_cookie(TOKEN_COOKIE, token, max_age=COOKIE_MAX_AGE, path="/", samesite="strict",
                        secure=_secure(request), httponly=True)
    response.set_cookie(CSRF_COOKIE, secrets.token_urlsafe(32), max_age=COOKIE_MAX_AGE, path="/",
                        samesite="strict", secure=_secure(request), httponly=False)


def end(request: Request, response: Response) -> None:
    for name in (TOKEN_COOKIE, CSRF_COOKIE):
        response.delete_cookie(name, path="/", samesite="strict", secure=_secure(request))


def page_principal(request: Request, session: Session) -> auth.Principal:
    """Who views a page: the bearer header's or the cookie's token; open access while no token exists; otherwise
    a redirect (303) to the login page, which comes back here."""
    for token in (auth.bearer_token(request.headers.get("authorization")), cookie_token(request)):
        if token:
            principal = auth.resolve_token(session, token)
            if principal is not None:
                return principal
    if not auth.tokens_exist(session):
        return auth.OPEN_ACCESS
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(status.HTTP_303_SEE_OTHER, "sign in with an API token",
                        headers={"Location": f"/login?next={quote(target, safe='')}"})


def safe_next(target: str | None) -> str:
    """Where the login page may send the browser back to: a path of this site only (no `//host`, no scheme)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target
