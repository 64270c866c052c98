"""API tokens: per project, `read` or `write` scope, stored as SHA-256 hashes.

While no token exists the API is open, and `check_bind_allowed` keeps the server on loopback. Once a token
exists every `/api` request needs `Authorization: Bearer <token>`: none or an unknown one -> 401, a token of
another project or a read token writing -> 403. Tokens are 256-bit random strings, so a plain SHA-256 is
enough (no password-style stretching needed).
"""

from __future__ import annotations

import hashlib
import ipaddress
import secrets
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from .db import connection_of, param_mark
from .models import ApiToken, TokenScope
from .repositories.projects import get_or_create_project

TOKEN_PREFIX = "tm_"


class BindNotAllowed(Exception):
    """Serving on a non-loopback address with no token configured, without --insecure."""


class HostsNotConfigured(BindNotAllowed):
    """Serving on every address (HOST=0.0.0.0 or ::) without ALLOWED_HOSTS saying which names clients use."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: `project_id` None means the API is open (no token configured)."""

    project_id: int | None
    scope: TokenScope

    @property
    def open(self) -> bool:
        return self.project_id is None


OPEN_ACCESS = Principal(project_id=None, scope=TokenScope.WRITE)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(session: Session, project: str, scope: TokenScope | str, description: str | None = None) -> str:
    """A new token for `project` (created if needed); only its hash is stored, the token is returned once."""
    scope = TokenScope(scope)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    owner = get_or_create_project(session, project)
    session.add(ApiToken(project_id=owner.id, scope=scope.value, token_hash=hash_token(token),
                         prefix=token[:10], description=description))
    session.flush()
    return token


# Every request runs one of these, so they are driver-level SQL on the session's (or the ingest path's) connection:
# no statement to build, no ORM entity. They are not cached across requests: a token created or revoked (by
# `trainmon token`, another process or replica) counts from the next request on.
_ANY_TOKEN = "SELECT 1 FROM api_tokens WHERE revoked_at IS NULL LIMIT 1"
_TOKEN = "SELECT project_id, scope FROM api_tokens WHERE token_hash = {} AND revoked_at IS NULL"


def tokens_exist(database: Session | Any) -> bool:
    """Whether any unrevoked token exists (then the API is closed: every `/api` request needs one)."""
    return connection_of(database).exec_driver_sql(_ANY_TOKEN).scalar() is not None


def resolve_token(database: Session | Any, token: str) -> Principal | None:
    """The principal of a bearer token, or None when it is unknown or revoked."""
    connection = connection_of(database)
    row = connection.exec_driver_sql(_TOKEN.format(param_mark(connection)), (hash_token(token),)).first()
    if row is None:
        return None
    return Principal(project_id=row[0], scope=TokenScope(row[1]))


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind_allowed(host: str, tokens_exist: bool, insecure: bool) -> None:
    """Raise BindNotAllowed when binding `host` would expose an API that has no token, unless `insecure`."""
    if tokens_exist or insecure or is_loopback(host):
        return
    raise BindNotAllowed(
        f"refusing to listen on {host}: no API token exists, so anyone who can reach it could write. "
        "Create one (`trainmon token create --project P --scope write`), bind 127.0.0.1, or pass --insecure.")


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        return None
    return credentials.strip()
