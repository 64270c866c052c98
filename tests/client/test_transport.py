"""What metric batches travel as and over what: rows (one per log call) on a lean keep-alive connection, against
the real API; the same errors as requests, a server restart under an idle connection, and requests wherever the
lean connection does not apply (HTTPS, proxies, a connection busy in another thread)."""

from __future__ import annotations

import http.server
import json
import math
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import ApiServer
from trainmon.client.api_client import ApiClient, ApiError, ApiUnavailable
from trainmon.client.records import MetricBatch, RegisterRun
from trainmon.exporter import TrainingMonitor

QUIET = {"port": False, "gpu": False, "system": False, "handle_signals": False}


def test_log_metrics_reach_the_api_as_rows_exactly(tmp_path: Path, api_server: ApiServer,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    bodies: list[dict] = []
    original = MetricBatch.rows_body

    def recording(self: MetricBatch) -> dict:
        bodies.append(original(self))
        return bodies[-1]

    monkeypatch.setattr(MetricBatch, "rows_body", recording)
    monitor = TrainingMonitor("rows", env={"RANK": "1", "WORLD_SIZE": "2"}, api_url=api_server.url,
                              spool_dir=str(tmp_path / "spool"), **QUIET)
    for step in range(3000):
        monitor.log_metrics({"loss": 1.0 / (step + 1), "val/acc": step, "odd": math.nan if step == 7 else 0.5,
                             "///": 1.0, "text": "x"}, step=step)
    monitor.finish()
    stored = sorted(api_server.ranked_points(monitor.run_id))
    assert len(stored) == 9000 and {rank for rank, *_ in stored} == {1}
    assert (1, "odd", 7, None) in stored  # NaN: stored as the special value
    assert (1, "val_acc", 2999, 2999.0) in stored and (1, "loss", 1, 0.5) in stored
    assert bodies and all(set(body) == {"batch_id", "rank", "rows"} and body["rank"] == 1 for body in bodies)
    assert sum(len(row[2]) for body in bodies for row in body["rows"]) == 9000
    assert monitor.recorder.shipper.stats["spooled"] == 0 and sum(monitor.counters.dropped.values()) == 0


def test_one_connection_is_kept_alive_and_reopened_after_the_server_restarts(api_server: ApiServer) -> None:
    client = ApiClient(api_server.url)
    assert RegisterRun("lean", {"experiment": "e", "run_id": "lean"}).send(client)["run_id"] == "lean"
    lean = client._lean  # noqa: SLF001 - the connection itself is what this test is about
    assert lean is not None
    first = lean._socket  # noqa: SLF001
    for step in range(3):
        assert MetricBatch("lean", rows=[(step, 1.0, {"loss": float(step)})]).send(client)["accepted"] == 1
    assert lean._socket is first and first is not None  # noqa: SLF001 - one connection for all
    api_server.kill()  # the idle connection dies with the server
    api_server.start()  # same port
    lean.IDLE_CHECK = 0.0  # checked before any reuse (by default: after a second idle, as the restart took)
    assert MetricBatch("lean", rows=[(9, 1.0, {"loss": 9.0})]).send(client)["accepted"] == 1
    assert lean._socket is not first  # noqa: SLF001 - noticed before it was used: no failed attempt
    assert sorted(api_server.points("lean")) == [("loss", 0, 0.0), ("loss", 1, 1.0), ("loss", 2, 2.0),
                                                 ("loss", 9, 9.0)]
    client.close()


class Scripted:
    """A local HTTP server answering each request with the next (status, headers, body) of a script."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes]]):
        self.answers = list(answers)
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        scripted = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                scripted.requests.append((self.command, self.path, dict(self.headers), body))
                status, headers, answer = scripted.answers.pop(0)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            do_PUT = do_POST

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/prefix"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def scripted() -> Iterator[Scripted]:
    server = Scripted([
        (429, {"Retry-After": "7", "Content-Type": "application/json"}, b'{"detail": "slow down"}'),
        (503, {}, b"<html>busy</html>"),
        (200, {"Content-Type": "application/json"}, b"not json"),
        (204, {}, b""),
        (200, {"Content-Type": "application/json", "Connection": "close"}, b'{"ok": true}'),
        (200, {"Content-Type": "application/json"}, b'{"ok": 2}'),
    ])
    yield server
    server.close()


def test_answers_and_errors_are_the_usual_ones(scripted: Scripted) -> None:
    client = ApiClient(scripted.url, token="secret")
    client.project = "p q"
    with pytest.raises(ApiError) as limited:
        client.request("POST", "/api/runs/r/metrics", json_body={"a": 1})
    assert limited.value.status == 429 and limited.value.retry_after == 7.0 and limited.value.retryable
    assert limited.value.message == '"slow down"'
    with pytest.raises(ApiError) as busy:
        client.request("POST", "/api/runs/r/notes", json_body={})
    assert busy.value.status == 503 and busy.value.message == "<html>busy</html>"
    with pytest.raises(ApiError, match="not JSON"):
        client.request("POST", "/api/runs", json_body={})
    assert client.request("PUT", "/api/runs/r/params", json_body={"params": {}}) is None
    assert client.request("POST", "/api/runs/r/heartbeat", json_body={}) == {"ok": True}  # then closed by the server
    assert client.request("POST", "/api/runs/r/heartbeat", json_body={}) == {"ok": 2}  # on a new connection
    method, path, headers, body = scripted.requests[0]
    assert (method, path, json.loads(body)) == ("POST", "/prefix/api/runs/r/metrics?project=p+q", {"a": 1})
    assert headers["Authorization"] == "Bearer secret" and headers["Content-Type"] == "application/json"
    assert headers["User-Agent"] == "trainmon-client" and headers.get("Accept-Encoding", "identity") == "identity"
    assert scripted.requests[2][1] == "/prefix/api/runs"  # ?project= only on run paths
    client.close()


def test_unreachable_and_silent_apis_are_unavailable() -> None:
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    with pytest.raises(ApiUnavailable):  # nothing listens there
        ApiClient(f"http://127.0.0.1:{port}").request("POST", "/api/runs", json_body={}, timeout=(0.5, 0.5))
    with socket.socket() as silent:  # accepts, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        client = ApiClient(f"http://127.0.0.1:{silent.getsockname()[1]}")
        with pytest.raises(ApiUnavailable, match="timed out"):
            client.request("POST", "/api/runs", json_body={}, timeout=(0.5, 0.3))
        client.close()


def test_requests_goes_where_the_lean_connection_does_not_apply(api_server: ApiServer,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert ApiClient("https://api.example.com")._lean is None  # noqa: SLF001 - HTTPS: requests' certificates
    monkeypatch.setenv("HTTP_PROXY", "http://proxy.invalid:3128")
    assert ApiClient("http://api.example.com")._lean is None  # noqa: SLF001 - a proxy applies
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    client = ApiClient(api_server.url)
    assert client._lean is not None  # noqa: SLF001 - NO_PROXY covers it
    assert client.request("POST", "/api/runs", json_body={"experiment": "e", "run_id": "busy"})["run_id"] == "busy"
    with client._lean._lock:  # noqa: SLF001 - another thread's request in flight: this one goes through requests
        answer = MetricBatch("busy", rows=[(1, 1.0, {"loss": 1.0})]).send(client)
    assert answer == {"accepted": 1, "duplicate": False}
    client.close()


@pytest.mark.parametrize(("raw", "expected"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", (200, b"{}", True)),
    (b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 4\r\n\r\nnull", (201, b"null", True)),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\n{\"a\r\n3\r\n\":1\r\n1\r\n}\r\n0\r\nT: 1\r\n\r\n",
     (200, b'{"a":1}', True)),
    (b"HTTP/1.1 204 No Content\r\n\r\n", (204, b"", True)),
    (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n[]", (200, b"[]", False)),
    (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", (200, b"until the end", False)),
])
def test_answers_are_read_whole_whatever_their_framing(raw: bytes, expected: tuple) -> None:
    from trainmon.client.api_client import _read_response

    ours, theirs = socket.socketpair()
    with ours, theirs:
        for offset in range(0, len(raw), 7):  # in small pieces: every boundary falls mid-way somewhere
            theirs.sendall(raw[offset:offset + 7])
        if not expected[2]:
            theirs.shutdown(socket.SHUT_WR)
        status, _headers, content, reusable = _read_response(ours, 65536)
    assert (status, content, reusable) == expected


@pytest.mark.parametrize("raw", [b"SSH-2.0-OpenSSH\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
def test_what_is_not_a_whole_answer_is_unavailable(raw: bytes) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(raw)

        thread = threading.Thread(target=answer)
        thread.start()
        client = ApiClient(f"http://127.0.0.1:{server.getsockname()[1]}")
        with pytest.raises(ApiUnavailable):
            client.request("POST", "/api/runs", json_body={}, timeout=(1.0, 2.0))
        thread.join()
        client.close()


def test_a_batch_too_large_for_the_api_is_sent_in_parts(tmp_path: Path) -> None:
    """An API with a lower MAX_POINTS_PER_BATCH answers 413: the batch goes in halves (each part a batch id of
    its own), and later batches are cut to the size it took. Nothing is set aside, nothing stored twice."""
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path, MAX_POINTS_PER_BATCH="700")
    server.start()
    try:
        monitor = TrainingMonitor("parts", api_url=server.url, spool_dir=str(tmp_path / "spool"), env={}, **QUIET)
        for step in range(3000):
            monitor.log_metrics({"a": float(step), "b": 1.0, "c": 2.0, "d": 3.0}, step=step)
        monitor.finish()
        stored = server.points(monitor.run_id)
        assert len(stored) == 12_000 and len(set(stored)) == 12_000
        assert monitor.recorder.shipper.stats["rejected"] == 0 and sum(monitor.counters.dropped.values()) == 0
        client = ApiClient(server.url)
        batch = MetricBatch(monitor.run_id, rows=[(step, 1.0, {"e": 1.0, "f": 2.0}) for step in range(1000)])
        assert batch.send(client) == {"accepted": 2000, "duplicate": False}
        assert client.batch_limit == 500  # 2000 -> 1000 -> 500 points a part
        assert batch.send(client) == {"accepted": 2000, "duplicate": True}  # the same parts: stored once
        assert len(server.points(monitor.run_id)) == 14_000
        client.close()
    finally:
        server.stop()
