"""The metadata API as a real server for tests: `python -m trainmon.metadata_api` (or `trainmon serve`) on
127.0.0.1 and a free port, in a temp dir, ready once /readyz answers 200 (the database answers and is migrated)."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from support.procs import ManagedProcess, free_port, http_ok

API_COMMAND = (sys.executable, "-m", "trainmon.metadata_api")


def api_environment(database_url: str, workdir: Path, port: int, **settings: str) -> dict[str, str]:
    """This process's environment plus the API's settings: loopback on `port`, `database_url`, artifacts under
    `workdir/artifacts`, warnings only; `settings` (upper-case names, as the API reads them) override."""
    return {**os.environ, "DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
            "ARTIFACT_ROOT": str(workdir / "artifacts"), "LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1",
            **settings}


def start_api(env: dict[str, str], workdir: Path, port: int, command: Sequence[str] = API_COMMAND,
              log_name: str = "api.log") -> ManagedProcess:
    """`command --port port` with `env` in `workdir` (output in `workdir/log_name`), returned once /readyz is 200;
    stopped, with its log in the error, when it exits or is not ready within 60 s."""
    process = ManagedProcess([*command, "--port", str(port)], workdir / log_name, env=env, cwd=workdir)
    process.wait_ready(http_ok(f"http://127.0.0.1:{port}/readyz"), timeout=60, what="metadata API ready")
    return process


@contextlib.contextmanager
def run_api(database_url: str, workdir: Path, command: Sequence[str] = API_COMMAND, log_name: str = "api.log",
            **settings: str) -> Iterator[str]:
    """The metadata API over `database_url` on a free port (see `api_environment`); yields its base URL once
    ready and stops it on exit."""
    port = free_port()
    process = start_api(api_environment(database_url, workdir, port, **settings), workdir, port, command, log_name)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.stop()
