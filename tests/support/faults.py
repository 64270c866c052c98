"""Real faults for the fault-matrix tests: a small tmpfs (full disk, read-only folder) and an HTTP proxy in front
of the real API that answers 500 to requests carrying a marker (a record the server keeps failing on)."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from support.procs import IN_CI

HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length", "content-encoding", "host"}


@contextlib.contextmanager
def tmpfs(path: Path, size: str = "2m", read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` mounted at ``path`` (root only); skipped locally, failed under CI=true, without it."""
    path.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True,
                             text=True, timeout=30)
    if mounted.returncode != 0:
        message = f"cannot mount a tmpfs here (needs root): {mounted.stderr.strip()}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


class FaultProxy:
    """Forwards every request to ``upstream``; answers 500 instead while the body holds ``poison`` (bytes)."""

    def __init__(self, upstream: str, poison: bytes | None = None):
        self.upstream = upstream.rstrip("/")
        self.poison = poison
        self.poisoned = 0
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if proxy.poison is not None and proxy.poison in body:
                    proxy.poisoned += 1
                    self._answer(500, b'{"detail":"injected internal error"}', {"Content-Type": "application/json"})
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
                try:
                    answer = requests.request(self.command, proxy.upstream + self.path, data=body, headers=headers,
                                              timeout=30)
                except requests.RequestException:
                    self._answer(502, b'{"detail":"upstream unavailable"}', {"Content-Type": "application/json"})
                    return
                kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_HEADERS}
                self._answer(answer.status_code, answer.content, kept)

            def _answer(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_DELETE = _forward

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
