"""HTTP client for the metadata API contract (DEVELOPERS.md, "Metadata API contract").

One keep-alive ``requests.Session`` per client, bearer token, connect/read timeouts. Non-finite metric values
travel as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (see ``json_value``).

Every write the exporter makes is also a *record* (a JSON dict with an ``op``) so that it can wait in the spool
and be replayed later: ``send(record)`` performs one record against the API.
"""

from __future__ import annotations

import json
import math
import mimetypes
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

DEFAULT_TIMEOUT = (3.05, 10.0)


class ApiError(Exception):
    """The API answered with an error status (``retryable`` for 408/425/429 and 5xx)."""

    def __init__(self, status: int, message: str, method: str = "", path: str = ""):
        super().__init__(f"{method} {path} -> {status}: {message}".strip())
        self.status = status
        self.message = message

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status in (408, 425, 429)


class ApiUnavailable(Exception):
    """The API could not be reached, or did not answer within the timeout (always retryable)."""

    retryable = True


def json_value(value: Any) -> Any:
    """A metric value as JSON: finite floats stay numbers; NaN/Inf become the contract's strings."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if value != value else ("Infinity" if value > 0 else "-Infinity")
    return value


def from_json_value(value: Any) -> float:
    """Inverse of ``json_value``."""
    if isinstance(value, str):
        return {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}[value]
    return float(value)


def json_safe(value: Any) -> Any:
    """Nested params/metrics with NaN/Inf floats encoded as strings and tuples as lists (JSON-serialisable)."""
    if isinstance(value, float):
        return json_value(value)
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    if value is None or isinstance(value, (str, int, bool)):
        return value
    item = getattr(value, "item", None)  # numpy / torch scalars
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError):
            pass
    return str(value)


def points_json(points: Sequence[tuple[str, int, float, float]]) -> list[dict[str, Any]]:
    """``(key, step, value, wall_time)`` tuples as the API's point objects."""
    return [{"key": key, "step": step, "value": json_value(float(value)), "wall_time": wall_time}
            for key, step, value, wall_time in points]


class ApiClient:
    """The metadata API over one keep-alive session."""

    def __init__(self, base_url: str, token: str | None = None,
                 timeout: float | tuple[float, float] = DEFAULT_TIMEOUT):
        if not base_url or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"api_url must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "trainmon-exporter"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"

    # --- transport ---

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                files: Any = None, data: Any = None, timeout: float | tuple[float, float] | None = None) -> Any:
        """One call; the decoded JSON answer (None for 204). Raises ApiUnavailable or ApiError."""
        url = f"{self.base_url}{path}"
        body = None if json_body is None else json.dumps(json_body, allow_nan=False).encode()
        headers = {"Content-Type": "application/json"} if body is not None else None
        try:
            response = self.session.request(method, url, data=body if body is not None else data, params=params,
                                            files=files, headers=headers, timeout=timeout or self.timeout)
        except requests.RequestException as error:  # refused, reset, timed out, cut off mid-answer
            raise ApiUnavailable(f"{method} {url}: {error}") from error
        if response.status_code >= 400:
            raise ApiError(response.status_code, _error_message(response), method, path)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as error:
            raise ApiError(response.status_code, f"answer is not JSON: {response.text[:200]!r}", method,
                           path) from error

    def close(self) -> None:
        self.session.close()

    # --- writes (each also available as a spoolable record, see `send`) ---

    def create_run(self, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", "/api/runs", json_body=json_safe(body))

    def set_status(self, run_id: str, status: str) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/status", json_body={"status": status})

    def heartbeat(self, run_id: str, timeout: float | tuple[float, float] | None = None) -> None:
        self.request("POST", f"/api/runs/{_q(run_id)}/heartbeat", json_body={}, timeout=timeout)

    def post_metrics(self, run_id: str, batch_id: str, points: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/metrics", json_body={"batch_id": batch_id,
                                                                                  "points": points})

    def put_params(self, run_id: str, params: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("PUT", f"/api/runs/{_q(run_id)}/params", json_body={"params": json_safe(params)})

    def post_tags(self, run_id: str, tags: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/tags",
                            json_body={"tags": {str(k): str(v) for k, v in tags.items()}})

    def post_note(self, run_id: str, text: str) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/notes", json_body={"text": text})

    def post_logs(self, run_id: str, batch_id: str, lines: list[dict[str, Any]]) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/logs", json_body={"batch_id": batch_id, "lines": lines})

    def post_checkpoint(self, run_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        return self.request("POST", f"/api/runs/{_q(run_id)}/checkpoints", json_body=json_safe(body))

    def upload_artifact(self, run_id: str, path: str | Path, kind: str, name: str, step: int | None = None,
                        metadata: Mapping[str, Any] | None = None) -> dict[str, Any]:
        path = Path(path)
        form: dict[str, str] = {"kind": kind, "name": name}
        if step is not None:
            form["step"] = str(step)
        if metadata is not None:
            form["metadata"] = json.dumps(json_safe(metadata), allow_nan=False)
        content_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        read_timeout = 30.0 + path.stat().st_size / 1e6  # a large file takes longer than a batch (>= 1 MB/s)
        with open(path, "rb") as file:
            return self.request("POST", f"/api/runs/{_q(run_id)}/artifacts", data=form,
                                files={"file": (path.name, file, content_type)}, timeout=(3.05, read_timeout))

    # --- reads ---

    def get_run(self, run_id: str) -> dict[str, Any]:
        return self.request("GET", f"/api/runs/{_q(run_id)}")

    def get_metric(self, run_id: str, key: str, **params: Any) -> Any:
        return self.request("GET", f"/api/runs/{_q(run_id)}/metrics/{_q(key)}", params=params)

    def get_experiments(self, **params: Any) -> Any:
        return self.request("GET", "/api/experiments", params=params)

    def get_experiment(self, experiment_id: int | str) -> Any:
        return self.request("GET", f"/api/experiments/{_q(str(experiment_id))}")

    def compare(self, **params: Any) -> Any:
        return self.request("GET", "/api/compare", params=params)

    # --- records ---

    def send_ensuring_run(self, record: Mapping[str, Any], run_body: Mapping[str, Any] | None) -> Any:
        """``send``; when the API does not know the run yet (404: its creation is queued behind, or was lost),
        create it from ``run_body`` and send again. A known run is never re-created (that would resume it)."""
        try:
            return self.send(record)
        except ApiError as error:
            if error.status != 404 or record.get("op") == "run" or not run_body:
                raise
        self.create_run(run_body)
        return self.send(record)

    def send(self, record: Mapping[str, Any]) -> Any:
        """Perform one spoolable record (see ``exporter/shipper.py`` for how they are made)."""
        op, run_id = record["op"], record.get("run_id", "")
        if op == "metrics":
            return self.post_metrics(run_id, record["batch_id"], record["points"])
        if op == "run":
            return self.create_run(record["body"])
        if op == "status":
            return self.set_status(run_id, record["status"])
        if op == "params":
            return self.put_params(run_id, record["params"])
        if op == "tags":
            return self.post_tags(run_id, record["tags"])
        if op == "note":
            return self.post_note(run_id, record["text"])
        if op == "logs":
            return self.post_logs(run_id, record["batch_id"], record["lines"])
        if op == "checkpoint":
            return self.post_checkpoint(run_id, record["body"])
        if op == "artifact":
            return self.upload_artifact(run_id, record["path"], record["kind"], record["name"], record.get("step"),
                                        record.get("metadata"))
        raise ValueError(f"unknown record op {op!r}")


def _q(segment: str) -> str:
    return quote(str(segment), safe="")


def _error_message(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, dict) and "detail" in body:
        return json.dumps(body["detail"])[:500]
    return json.dumps(body)[:500]
