"""The one delivery policy for every record, used by the shipper, `trainmon sync` and run registration.

Each answer is classified once (`classify`):

- ``DELIVERED``: the API stored it (a replayed batch id is stored once, so re-sending is safe);
- ``RETRY``: the API is unreachable, timed out, or answered 5xx/408/425/429: keep the record (in order), retry
  with exponential backoff and full jitter (`Backoff`);
- ``UNAUTHORIZED``: 401/403: keep the record; a token must be fixed (the shipper keeps retrying, a sync stops);
- ``REJECTED``: any other 4xx, or a file the record points to is gone: retrying cannot help; the caller moves
  it to the run's dead letters (`trainmon.client.dead_letters`), counts it and goes on, so one bad record never
  blocks the ones after it. A record the API answers 500 the same way ``POISON_ATTEMPTS`` times in a row (an
  internal error, not an outage: 502/503/504 and timeouts are retried without limit) is rejected the same way.

A ``Retry-After`` the API sends is honoured: the next attempt waits at least that long.

A record for a run the API does not know yet (404: its registration is queued behind, or was lost) registers
the run from ``run_body`` and is sent again. A known run is never registered again by `trainmon sync`
(``register_existing=False``): that would resume a CRASHED run.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from .api_client import ApiClient, ApiError, ApiUnavailable
from .records import Record, RegisterRun


class Outcome(enum.Enum):
    DELIVERED = "delivered"
    RETRY = "retry"
    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"


POISON_STATUSES = frozenset({500})
POISON_ATTEMPTS = 5


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    answer: Any = None
    error: Exception | None = None

    @property
    def status(self) -> int | None:
        """The API's HTTP status, when it answered."""
        return getattr(self.error, "status", None)

    @property
    def retry_after(self) -> float | None:
        return getattr(self.error, "retry_after", None)

    @property
    def message(self) -> str:
        return str(self.error) if self.error is not None else ""

    @property
    def done(self) -> bool:
        """True when the record can be forgotten (delivered, or rejected for good)."""
        return self.outcome in (Outcome.DELIVERED, Outcome.REJECTED)


def classify(error: Exception) -> Outcome:
    """The outcome an error stands for (see the module docstring)."""
    if isinstance(error, ApiUnavailable):
        return Outcome.RETRY
    if isinstance(error, ApiError):
        if error.retryable:
            return Outcome.RETRY
        if error.status in (401, 403):
            return Outcome.UNAUTHORIZED
        return Outcome.REJECTED
    if isinstance(error, OSError):  # a file spooled by reference is gone or unreadable
        return Outcome.REJECTED
    raise error


def deliver(api: ApiClient, record: Record, run_body: Mapping[str, Any] | None = None, *,
            register_existing: bool = True) -> Result:
    """Send one record under the policy; never raises for an answer of the API."""
    try:
        if isinstance(record, RegisterRun) and not register_existing and _run_exists(api, record):
            return Result(Outcome.DELIVERED)
        try:
            return Result(Outcome.DELIVERED, record.send(api))
        except ApiError as error:
            if error.status != 404 or isinstance(record, RegisterRun) or not run_body:
                raise
        RegisterRun(record.run_id, dict(run_body)).send(api)
        return Result(Outcome.DELIVERED, record.send(api))
    except (ApiError, ApiUnavailable, OSError) as error:
        return Result(classify(error), error=error)


class Deliverer:
    """`deliver` for one sender (the shipper, one `trainmon sync`), which also turns a record that keeps failing
    with the same internal error into a rejection (see the module docstring)."""

    def __init__(self, api: ApiClient, run_body: Mapping[str, Any] | None = None, *, register_existing: bool = True,
                 poison_attempts: int = POISON_ATTEMPTS):
        self.api = api
        self.run_body = run_body
        self.register_existing = register_existing
        self.poison_attempts = poison_attempts
        self._failing: tuple[str, int] | None = None
        self._repeats = 0

    def __call__(self, record: Record) -> Result:
        result = deliver(self.api, record, self.run_body, register_existing=self.register_existing)
        if result.outcome is Outcome.RETRY and result.status in POISON_STATUSES:
            failing = (fingerprint(record), int(result.status or 0))
            self._repeats = self._repeats + 1 if failing == self._failing else 1
            self._failing = failing
            if self._repeats >= self.poison_attempts:
                self._failing, self._repeats = None, 0
                return Result(Outcome.REJECTED, error=result.error)
        elif result.outcome is not Outcome.RETRY:
            self._failing, self._repeats = None, 0
        return result


def fingerprint(record: Record) -> str:
    """What identifies one record across attempts (and across reads of the spool)."""
    data = json.dumps(record.to_json(), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha1(data.encode(), usedforsecurity=False).hexdigest()


def _run_exists(api: ApiClient, record: RegisterRun) -> bool:
    try:
        api.get_run(record.body.get("run_id") or record.run_id)
    except ApiError as error:
        if error.status == 404:
            return False
        raise
    return True


class Backoff:
    """Exponential backoff with full jitter: delays in [d/2, d], d doubling from ``initial`` up to ``maximum``."""

    def __init__(self, initial: float = 0.5, maximum: float = 15.0):
        self.initial = initial
        self.maximum = maximum
        self.current = 0.0

    @property
    def active(self) -> bool:
        return self.current > 0.0

    def next_delay(self, at_least: float | None = None) -> float:
        """The next wait; never shorter than ``at_least`` (the API's Retry-After)."""
        self.current = min(self.maximum, self.current * 2 if self.current else self.initial)
        return max(random.uniform(self.current / 2, self.current), at_least or 0.0)

    def reset(self) -> None:
        self.current = 0.0
