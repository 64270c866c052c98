"""Helpers of the SDK tests: the real metadata API (`python -m trainmon.metadata_api`, uvicorn) on a real SQLite
file, restartable on the same port so that tests can SIGKILL it and bring it back; trainer environments; torch."""

from __future__ import annotations

import os
import signal
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import requests
from support.api import api_environment, start_api
from support.procs import IN_CI, ManagedProcess, free_port, wait_until

REPO = Path(__file__).resolve().parents[2]


class ApiServer:
    """One metadata API process at a time on a fixed port, over one SQLite database file."""

    def __init__(self, workdir: Path, heartbeat_timeout: float = 300.0, **settings: str):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.db_path = workdir / "trainmon.db"
        self.env = api_environment(f"sqlite:///{self.db_path}", workdir, self.port,
                                   HEARTBEAT_TIMEOUT_SECONDS=str(heartbeat_timeout), CRASH_CHECK_INTERVAL_SECONDS="0.5",
                                   ARTIFACT_ROOT=str(workdir / "server-artifacts"), **settings)
        self.process: ManagedProcess | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = start_api(self.env, self.workdir, self.port, log_name=f"api-{self.starts}.log")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, like a crashed host."""
        assert self.process is not None
        self.process.kill(signal.SIGKILL)
        self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def get(self, path: str, **params: object) -> dict:
        response = requests.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def points(self, run_id: str) -> list[tuple[str, int, float]]:
        """Every stored point of a run, read from the database file itself (duplicates would show)."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute("SELECT p.key, p.step, p.value FROM metric_points p "
                                   "JOIN runs r ON r.key = p.run_key WHERE r.id = ?", (run_id,)))

    def ranked_points(self, run_id: str) -> list[tuple[int, str, int, float]]:
        """Every stored point of a run as (rank, key, step, value), read from the database file itself."""
        with sqlite3.connect(self.db_path) as db:
            return list(db.execute("SELECT p.rank, p.key, p.step, p.value FROM metric_points p "
                                   "JOIN runs r ON r.key = p.run_key WHERE r.id = ?", (run_id,)))

    def status(self, run_id: str) -> str:
        return self.get(f"/api/runs/{run_id}")["status"]

    def wait_status(self, run_id: str, status: str, timeout: float = 30.0) -> None:
        wait_until(lambda: self.status(run_id) == status, timeout=timeout, what=f"run {run_id} {status}")


def python_env(**extra: str) -> dict[str, str]:
    """The environment for trainer subprocesses (no TRAINMON_* leaking in from the caller)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRAINMON_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def require_torch() -> Any:
    """torch, or a skip with the reason (a failure under CI=true, where `make test` installs it)."""
    try:
        import torch
    except ImportError:
        if IN_CI:
            pytest.fail("torch is not installed; `make test` installs torch==2.13.0")
        pytest.skip("torch is not installed (`make test` installs torch==2.13.0)")
    return torch
