"""Child processes for the demo, the bench scripts and the tests: free loopback ports, polling until ready, and a
managed child (output in a log file, its own process group, stopped group and all).

Standard library plus `requests`; nothing here imports pytest (tests/support/procs.py adds the test-only parts).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"
API_COMMAND = (sys.executable, "-m", "trainmon.metadata_api")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (also: an address where a server is down)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when nothing listens on ``host:port`` and it can be bound right now."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_until(check: Callable[[], bool], timeout: float = 30.0, interval: float = 0.1,
               what: str = "condition") -> None:
    """Poll `check` until it returns true; raise TimeoutError naming `what` otherwise (errors count as not yet)."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as error:  # noqa: BLE001 - retried until the deadline
            last_error = error
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last error: {last_error})")


def http_ok(url: str) -> Callable[[], bool]:
    """A readiness check: GET `url` answers 200."""
    return lambda: requests.get(url, timeout=2).status_code == 200


def die_with_parent() -> None:
    """A `preexec_fn` (Linux): the child gets SIGTERM when its parent dies without cleaning up (e.g. SIGKILL)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class ManagedProcess:
    """A child process in its own session (process group) with its output in a log file; `stop()` ends the group.

    `die_with_parent` asks Linux to SIGTERM the child when this process dies uncleanly; `preexec` runs in the child
    before `argv` (e.g. dropping privileges), after that.
    """

    def __init__(self, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None,
                 cwd: str | Path | None = None, preexec: Callable[[], None] | None = None,
                 die_with_parent: bool = False):
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
                                     preexec_fn=_chain(die_with_parent, preexec))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, chars: int = 4000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self) -> None:
        """SIGTERM the process group without waiting (`stop()` waits)."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        self.proc.wait(timeout=30)

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM the group, wait up to `timeout` s, then SIGKILL it; closes the log. Safe to call twice."""
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()

    def wait_ready(self, check: Callable[[], bool], timeout: float = 30.0, what: str | None = None) -> None:
        """Poll `check` until it holds; when the child exits first or time runs out, stop it and raise
        (RuntimeError with the log's tail, or TimeoutError)."""
        try:
            wait_until(lambda: not self.alive() or check(), timeout=timeout, what=what or self.argv[0])
        except TimeoutError:
            self.stop()
            raise
        if not self.alive():
            self.stop()
            raise RuntimeError(f"{self.argv[0]} exited with {self.proc.returncode}:\n{self.log_tail()}")


def _chain(die: bool, preexec: Callable[[], None] | None) -> Callable[[], None] | None:
    if not die:
        return preexec

    def both() -> None:
        die_with_parent()
        if preexec is not None:
            preexec()

    return both


# --- the metadata API ---


def api_environment(database_url: str, workdir: Path, port: int, **settings: str) -> dict[str, str]:
    """This process's environment plus the API's settings: loopback on `port`, `database_url`, artifacts under
    `workdir/artifacts`, warnings only; `settings` (upper-case names, as the API reads them) override."""
    return {**os.environ, "DATABASE_URL": database_url, "HOST": LOOPBACK, "PORT": str(port),
            "ARTIFACT_ROOT": str(workdir / "artifacts"), "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
            **settings}


def start_api(env: Mapping[str, str], workdir: Path, port: int, command: Sequence[str] = API_COMMAND,
              log_name: str = "api.log", die_with_parent: bool = False) -> ManagedProcess:
    """`command --port port` with `env` in `workdir` (output in `workdir/log_name`), returned once /readyz is 200;
    stopped, with its log in the error, when it exits or is not ready within 60 s."""
    process = ManagedProcess([*command, "--port", str(port)], workdir / log_name, env=env, cwd=workdir,
                             die_with_parent=die_with_parent)
    process.wait_ready(http_ok(f"http://{LOOPBACK}:{port}/readyz"), timeout=60, what="metadata API ready")
    return process


@contextlib.contextmanager
def run_api(database_url: str, workdir: Path, command: Sequence[str] = API_COMMAND, log_name: str = "api.log",
            **settings: str) -> Iterator[str]:
    """The metadata API over `database_url` on a free port (see `api_environment`); yields its base URL once
    ready and stops it on exit."""
    port = free_port()
    process = start_api(api_environment(database_url, workdir, port, **settings), workdir, port, command, log_name)
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        process.stop()
