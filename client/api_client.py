"""HTTP transport for the metadata API contract (DEVELOPERS.md, "Metadata API contract").

One keep-alive ``requests.Session`` per client, bearer token, connect/read timeouts. Non-finite metric values
travel as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (`trainmon.common.wire`).

Writes are typed records (`trainmon.client.records`), each sending itself through ``request``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import time
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import quote

import requests

try:
    import orjson
except ImportError:  # pragma: no cover - orjson is a dependency; the stdlib still works without it
    orjson = None  # type: ignore[assignment]

DEFAULT_TIMEOUT = (3.05, 10.0)
MAX_RETRY_AFTER = 600.0


class ApiError(Exception):
    """The API answered with an error status (``retryable`` for 408/425/429 and 5xx); ``retry_after`` holds the
    seconds of a ``Retry-After`` header (None without one)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = "",
                 retry_after: float | None = None):
        super().__init__(f"{method} {path} -> {status}: {message}".strip())
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status in (408, 425, 429)


class ApiUnavailable(Exception):
    """The API could not be reached, or did not answer within the timeout (always retryable)."""

    retryable = True


class ApiClient:
    """The metadata API over one keep-alive session."""

    def __init__(self, base_url: str, token: str | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        #: the run's project: sent as ?project= on run paths, so a token-less API with the same run id in
        #: several projects knows which run is meant (with a token, the token's project decides)
        self.project: str | None = None
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "trainmon-client"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # --- transport ---

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                files: Any = None, data: Any = None, timeout: float | tuple[float, float] | None = None) -> Any:
        """One call; the decoded JSON answer (None for 204). Raises ApiUnavailable or ApiError."""
        url = f"{self.base_url}{path}"
        if self.project and path.startswith("/api/runs/"):  # run ids are unique per project, not globally
            params = {"project": self.project, **(params or {})}
        body = None if json_body is None else encode_json(json_body)
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = self.session.request(method, url, data=body if body is not None else data, params=params,
                                            files=files, headers=headers, timeout=timeout or self.timeout)
        except requests.RequestException as error:  # refused, reset, timed out, cut off mid-answer
            raise ApiUnavailable(f"{method} {url}: {error}") from error
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_message(response), method, path,
                           retry_after_seconds(response.headers.get("Retry-After")))
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise ApiError(response.status_code, f"answer is not JSON: {response.text[:200]!r}", method,
                           path) from error

    def download(self, path: str, out: Any, timeout: float | tuple[float, float] = (3.05, 60.0)) -> int:
        """Stream a file answer into ``out`` (a binary file); the number of bytes. Raises like `request`."""
        url = f"{self.base_url}{path}"
        params = {"project": self.project} if self.project and path.startswith("/api/runs/") else None
        try:
            with self.session.get(url, params=params, stream=True, timeout=timeout) as response:
                if response.status_code >= 400:
                    raise ApiError(response.status_code, _error_message(response), "GET", path,
                                   retry_after_seconds(response.headers.get("Retry-After")))
                size = 0
                for chunk in response.iter_content(1 << 20):
                    out.write(chunk)
                    size += len(chunk)
                return size
        except requests.RequestException as error:
            raise ApiUnavailable(f"GET {url}: {error}") from error

    @contextlib.contextmanager
    def timeout_of(self, timeout: float | tuple[float, float]) -> Iterator[None]:
        """Requests made inside the block use ``timeout`` (the caller's own thread waits on them: keep it short)."""
        previous, self.timeout = self.timeout, timeout
        try:
            yield
        finally:
            self.timeout = previous

    def close(self) -> None:
        self.session.close()

    def heartbeat(self, run_id: str, timeout: float | tuple[float, float] | None = None) -> None:
        self.request("POST", f"/api/runs/{quote_segment(run_id)}/heartbeat", json_body={}, timeout=timeout)

    # --- reads ---

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/runs/{quote_segment(run_id)}")

    def get_metric(self, run_id: str, key: str, **params: Any) -> Any:
        return self.request("GET", f"/api/runs/{quote_segment(run_id)}/metrics/{quote_segment(key)}", params=params)

    def get_experiments(self, **params: Any) -> Any:
        return self.request("GET", "/api/experiments", params=params)

    def get_experiment(self, experiment_id: int | str) -> Any:
        return self.request("GET", f"/api/experiments/{quote_segment(str(experiment_id))}")

    def compare(self, **params: Any) -> Any:
        return self.request("GET", "/api/compare", params=params)


def encode_json(data: Any) -> bytes:
    """A request body as JSON. Every record encodes non-finite floats by the wire contract first (``"NaN"``,
    ``"Infinity"``), so there are none left here; orjson (about 10x faster on metric batches, whose cost is mostly
    formatting floats) when installed, else the stdlib, which refuses a stray NaN."""
    if orjson is not None:
        with contextlib.suppress(TypeError):  # a type orjson does not serialise: the stdlib decides, and names it
            return orjson.dumps(data, option=orjson.OPT_NON_STR_KEYS)
    return json.dumps(data, allow_nan=False).encode()


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """A ``Retry-After`` header (delta-seconds or an HTTP date) as seconds from now, capped at 10 minutes."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return min(max(seconds, 0.0), MAX_RETRY_AFTER) if math.isfinite(seconds) else None


def quote_segment(segment: str) -> str:
    """One URL path segment (a run id or key may hold '/' or '?')."""
    return quote(str(segment), safe="")


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return json.dumps(body["detail"])[:500]
    return json.dumps(body)[:500]
