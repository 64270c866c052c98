"""Rate limits: failed authentications per client address, writes per token. Both answer 429 `{detail}` with
`Retry-After` (seconds), which the SDK honours.

- AUTH_FAILURES_PER_MINUTE (default 20): every 401 costs the client address one unit of a bucket of that size
  that refills at that rate; an address whose bucket is empty gets 429 for every request (but OPEN_PATHS) until
  a unit is back (so 1,000 wrong tokens in a burst give 20 401s and then 429s).
- WRITES_PER_MINUTE (default 30,000): POST/PUT/PATCH/DELETE per bearer token (per client address without one),
  a bucket of that size refilling at that rate, so a minute's worth can come in one burst (a spool replay). A
  trainer rank sends about one metric batch and one log batch a second and a heartbeat every 5 s, so 64 ranks
  sharing a token stay far below it.
0 turns a limit off. The buckets live in the process (each server process counts alone) and are capped at
`MAX_KEYS` entries. The client address is the connection's peer, or what uvicorn takes from `X-Forwarded-For`
for a trusted proxy (`--forwarded-allow-ips`); clients behind one proxy share the failure budget.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .auth import bearer_token
from .errors import send_json_error
from .security import WRITE_METHODS

log = logging.getLogger("trainmon.metadata_api.ratelimit")

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
MAX_KEYS = 10_000


class TokenBuckets:
    """One token bucket per key: `capacity` units, refilled at `capacity` per `period` seconds."""

    def __init__(self, capacity: int, period: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = MAX_KEYS):
        self.capacity = float(capacity)
        self.rate = capacity / period
        self.clock = clock
        self.max_keys = max_keys
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (units, when)

    def level(self, key: str) -> float:
        """The units `key` has now (a key never seen has a full bucket)."""
        entry = self._buckets.get(key)
        if entry is None:
            return self.capacity
        units, when = entry
        return min(self.capacity, units + (self.clock() - when) * self.rate)

    def wait(self, key: str) -> float:
        """Seconds until `key` has a whole unit (0 when it has one now)."""
        missing = 1.0 - self.level(key)
        return 0.0 if missing <= 0 else missing / self.rate

    def take(self, key: str) -> float:
        """Take one unit: 0 when taken, else the seconds to wait (nothing is taken)."""
        waiting = self.wait(key)
        if waiting == 0:
            self.spend(key)
        return waiting

    def spend(self, key: str) -> None:
        """Take one unit even when the bucket is empty (never below zero)."""
        self._buckets[key] = (max(0.0, self.level(key) - 1.0), self.clock())
        if len(self._buckets) > self.max_keys:
            self._prune()

    def _prune(self) -> None:
        """Forget full buckets (the same as no entry); if still too many, the least recently used half."""
        for key in [key for key in self._buckets if self.level(key) >= self.capacity]:
            del self._buckets[key]
        if len(self._buckets) > self.max_keys:
            by_age = sorted(self._buckets, key=lambda key: self._buckets[key][1])
            for key in by_age[:len(by_age) // 2]:
                del self._buckets[key]


class RateLimits:
    """The two limits of one API process: `refusal` before a request runs, `failed` for each 401 it answers.
    The API's request guard (`middleware.RequestGuard`) applies them; `RateLimitMiddleware` is the same as a
    middleware of its own."""

    def __init__(self, auth_failures_per_minute: int, writes_per_minute: int,
                 clock: Callable[[], float] = time.monotonic):
        self.failures = TokenBuckets(auth_failures_per_minute, clock=clock) if auth_failures_per_minute else None
        self.writes = TokenBuckets(writes_per_minute, clock=clock) if writes_per_minute else None

    def applies(self, path: str) -> bool:
        """Whether requests to `path` are limited (health checks and /metrics never are)."""
        return path not in OPEN_PATHS

    def refusal(self, address: str, method: str, authorization: str | None) -> tuple[float, str] | None:
        """(seconds to wait, why) when this request is refused now, else None (a write then took its unit)."""
        if self.failures is not None and (waiting := self.failures.wait(address)):
            return waiting, "too many failed authentications from this address"
        if self.writes is not None and method in WRITE_METHODS:
            token = bearer_token(authorization)
            key = "token:" + hashlib.sha256(token.encode()).hexdigest() if token else "address:" + address
            if waiting := self.writes.take(key):
                return waiting, (f"over WRITES_PER_MINUTE ({int(self.writes.capacity)}) for this "
                                 f"{'token' if token else 'address'}")
        return None

    def failed(self, address: str) -> None:
        """A 401 went to `address`: it costs a unit of its failure budget."""
        failures = self.failures
        if failures is None:
            return
        had_budget = not failures.wait(address)
        failures.spend(address)
        if had_budget and failures.wait(address):
            log.warning("client %s used up its %d failed authentications a minute: 429 until the budget "
                        "refills", address, int(failures.capacity))


def client_address(scope: Scope) -> str:
    return (scope.get("client") or ("unknown", 0))[0]


def too_many_answer(waiting: float, why: str) -> tuple[int, str, dict[str, str]]:
    """(status, detail, headers) of a 429 after `refusal`."""
    seconds = max(1, math.ceil(waiting))
    return 429, f"rate limit: {why}; retry in {seconds} s", {"Retry-After": str(seconds)}


class RateLimitMiddleware:
    """429 with Retry-After when a client address failed authentication too often, or a token wrote too much
    (`RateLimits` as a middleware of its own)."""

    def __init__(self, app: ASGIApp, auth_failures_per_minute: int, writes_per_minute: int,
                 clock: Callable[[], float] = time.monotonic):
        self.app = app
        self.limits = RateLimits(auth_failures_per_minute, writes_per_minute, clock)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.limits.applies(scope["path"]):
            await self.app(scope, receive, send)
            return
        address = client_address(scope)
        refused = self.limits.refusal(address, scope["method"], Headers(scope=scope).get("authorization"))
        if refused is not None:
            await send_json_error(send, *too_many_answer(*refused))
            return
        if self.limits.failures is None:
            await self.app(scope, receive, send)
            return
        limits = self.limits

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                limits.failed(address)
            await send(message)

        await self.app(scope, receive, counting_send)
