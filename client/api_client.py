"""HTTP transport for the metadata API contract (DEVELOPERS.md, "Metadata API contract").

One keep-alive ``requests.Session`` per client, bearer token, connect/read timeouts. Non-finite metric values
travel as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"`` (`trainmon.common.wire`).

Requests with a JSON body (every write a trainer makes: metric batches above all) to a plain ``http://`` API that
no proxy setting applies to go over one lean keep-alive connection instead (`_LeanConnection`): the same
request, headers, timeouts and errors, at a fraction of the CPU (requests: ~0.9 ms a request, most of it in its
per-request environment and adapter logic) and with two system calls a request instead of about ten (each one
costs a training loop that shares the GIL a forced switch). HTTPS, proxies, files and reads go through requests.

Writes are typed records (`trainmon.client.records`), each sending itself through ``request``.
"""

from __future__ import annotations

import contextlib
import email.utils
import json
import math
import select
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

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
        #: the API refused the rows form of metric batches (an older API): send point objects
        self.points_only = False
        #: the most points a metric batch may hold, once the API refused a larger one as too large (413)
        self.batch_limit: int | None = None
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "trainmon-client"
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._lean = _LeanConnection.for_url(self.base_url)

    # --- transport ---

    def request(self, method: str, path: str, *, json_body: Any = None, params: Mapping[str, Any] | None = None,
                files: Any = None, data: Any = None, timeout: float | tuple[float, float] | None = None) -> Any:
        """One call; the decoded JSON answer (None for 204). Raises ApiUnavailable or ApiError."""
        url = f"{self.base_url}{path}"
        if self.project and path.startswith("/api/runs/"):  # run ids are unique per project, not globally
            params = {"project": self.project, **(params or {})}
        body = None if json_body is None else encode_json(json_body)
        if body is not None and files is None and data is None and self._lean is not None:
            answer = self._lean.request(method, path, params, body, self.session.headers, timeout or self.timeout)
            if answer is not None:
                return _answer(method, path, *answer)
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
        if self._lean is not None:
            self._lean.close()

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
    return _detail(body)


def _detail(body: Any) -> str:
    if isinstance(body, dict) and "detail" in body:
        return json.dumps(body["detail"])[:500]
    return json.dumps(body)[:500]


def _answer(method: str, path: str, status: int, content: bytes, retry_after: str | None) -> Any:
    """What `ApiClient.request` returns (or raises) for an answer of the lean connection."""
    if status >= 400:
        try:
            message = _detail(json.loads(content))
        except ValueError:
            message = content.decode("utf-8", "replace")[:300]
        raise ApiError(status, message, method, path, retry_after_seconds(retry_after))
    if status == 204 or not content:
        return None
    try:
        return json.loads(content)
    except ValueError as error:
        raise ApiError(status, f"answer is not JSON: {content[:200].decode('utf-8', 'replace')!r}", method,
                       path) from error


class _LeanConnection:
    """One keep-alive HTTP/1.1 connection on a plain socket, for requests with a JSON body: one request at a time
    (another thread meanwhile goes through requests), reconnecting when the server closed it.

    Made for sharing the GIL with a training loop: every system call a background thread makes gives the GIL up,
    and taking it back from a busy loop forces a switch that stalls the loop (the longer, the busier the
    machine). requests and http.client make about ten such calls a request (a poll before each read and write
    for their timeouts, the head and the body sent apart, a liveness poll); this makes two: one send, one
    receive. The kernel keeps the read timeout (``SO_RCVTIMEO``/``SO_SNDTIMEO`` on a blocking socket); a
    connection idle for more than `IDLE_CHECK` seconds is checked before it is used again (the server may have
    closed it meanwhile: uvicorn does after 5 s)."""

    IDLE_CHECK = 1.0
    MAX_HEAD = 64 * 1024

    def __init__(self, host: str, port: int, prefix: str, base_url: str):
        self.host = host
        self.port = port
        self.prefix = prefix
        self.base_url = base_url
        self._host_header = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self._socket: socket.socket | None = None
        self._socket_timeout: float | None = None
        self._last_used = 0.0
        self._lock = threading.Lock()

    @classmethod
    def for_url(cls, base_url: str) -> _LeanConnection | None:
        """One for a plain-HTTP API that no proxy setting (``HTTP_PROXY``, ``NO_PROXY``, ...) applies to."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname or requests.utils.get_environ_proxies(base_url):
            return None
        return cls(parts.hostname, parts.port or 80, parts.path.rstrip("/"), base_url)

    def request(self, method: str, path: str, params: Mapping[str, Any] | None, body: bytes,
                session_headers: Mapping[str, str], timeout: float | tuple[float, float]
                ) -> tuple[int, bytes, str | None] | None:
        """(status, content, Retry-After) of one request; None when another request holds the connection (the
        caller sends it through requests). Raises ApiUnavailable like requests' errors."""
        if not self._lock.acquire(blocking=False):
            return None
        try:
            target = f"{self.prefix}{path}"
            if params:
                target = f"{target}?{urlencode(params, doseq=True)}"
            lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host_header}", "Accept: */*",
                     "Accept-Encoding: identity", "Content-Type: application/json", f"Content-Length: {len(body)}"]
            lines += [f"{name}: {session_headers[name]}" for name in ("User-Agent", "Authorization")
                      if name in session_headers]
            head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
            connect_timeout, read_timeout = timeout if isinstance(timeout, tuple) else (timeout, timeout)
            try:
                sock = self._connected(connect_timeout, read_timeout)
                try:
                    sock.sendall(head + body)
                except BrokenPipeError:  # it may have answered (413) and closed before it read the whole body
                    status, headers, content, _ = _read_response(sock, self.MAX_HEAD)
                    self.close()
                    return status, content, headers.get("retry-after")
                status, headers, content, reusable = _read_response(sock, self.MAX_HEAD)
            except (OSError, ValueError) as error:  # refused, reset, timed out, cut off, not HTTP
                self.close()
                reason = "timed out" if isinstance(error, (BlockingIOError, TimeoutError)) else str(error)
                raise ApiUnavailable(f"{method} {self.base_url}{path}: {reason}") from error
            self._last_used = time.monotonic()
            if not reusable:
                self.close()
            return status, content, headers.get("retry-after")
        finally:
            self._lock.release()

    def _connected(self, connect_timeout: float, read_timeout: float) -> socket.socket:
        sock = self._socket
        if sock is not None and time.monotonic() - self._last_used > self.IDLE_CHECK and _dropped(sock):
            self.close()
            sock = None
        if sock is None:
            sock = socket.create_connection((self.host, self.port), timeout=connect_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._socket, self._socket_timeout = sock, None
        if self._socket_timeout != read_timeout:
            try:  # a blocking socket whose reads and writes the kernel times out: one system call each
                sock.settimeout(None)
                seconds = int(read_timeout)
                value = struct.pack("ll", seconds, int((read_timeout - seconds) * 1e6))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, value)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, value)
            except (OSError, struct.error):  # no such option here: Python's own timeouts
                sock.settimeout(read_timeout)
            self._socket_timeout = read_timeout
        return sock

    def close(self) -> None:
        sock, self._socket = self._socket, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


def _read_response(sock: socket.socket, max_head: int) -> tuple[int, dict[str, str], bytes, bool]:
    """(status, headers by lower-case name, body, whether the connection can carry another request) of one
    HTTP/1.x answer read from `sock` (interim 1xx answers skipped); ValueError for what is not one,
    ConnectionError when the server closes the connection before the answer is whole."""
    data = bytearray()

    def fill(size: int) -> None:  # until `data` holds at least `size` bytes
        while len(data) < size:
            chunk = sock.recv(max(65536, size - len(data)))
            if not chunk:
                raise ConnectionError("the API closed the connection before it answered")
            data.extend(chunk)

    while True:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            if len(data) > max_head:
                raise ValueError("the answer's head is too long")
            fill(len(data) + 1)
            continue
        lines = bytes(data[:end]).decode("latin-1").split("\r\n")
        del data[:end + 4]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise ValueError(f"not an HTTP answer: {lines[0][:80]!r}")
        status = int(rest[:3])
        headers = {}
        for line in lines[1:]:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        if status >= 200:
            break
    reusable = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
    if status in (204, 304):
        return status, headers, b"", reusable
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, _read_chunks(data, fill), reusable
    if "content-length" in headers:
        length = int(headers["content-length"])
        fill(length)
        return status, headers, bytes(data[:length]), reusable
    while True:  # no length: the body ends with the connection
        try:
            fill(len(data) + 1)
        except ConnectionError:
            return status, headers, bytes(data), False


def _read_chunks(data: bytearray, fill: Callable[[int], None]) -> bytes:
    body = bytearray()
    position = 0
    while True:
        while (end := data.find(b"\r\n", position)) < 0:
            fill(len(data) + 1)
        size = int(bytes(data[position:end]).split(b";")[0], 16)
        position = end + 2
        if size == 0:  # trailers, then an empty line
            while (end := data.find(b"\r\n", position)) != position:
                if end < 0:
                    fill(len(data) + 1)
                else:
                    position = end + 2
            return bytes(body)
        fill(position + size + 2)
        body.extend(data[position:position + size])
        position += size + 2


def _dropped(sock: Any) -> bool:
    """True when an idle keep-alive connection was closed by the server (it reads as readable: EOF)."""
    try:
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
