"""Helpers of the framework integration tests: reads of the metadata API, trainer environments, the frameworks
themselves (a failure under CI=true when one is missing: `make test` installs them with the dev extra), and the
docs' examples run as scripts."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import requests
from support.procs import IN_CI, wait_until

os.environ.setdefault("KERAS_BACKEND", "torch")  # before any `import keras` in this process
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tiny models from configs only: never a download
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "docs" / "examples"
SCRIPTS = Path(__file__).resolve().parent / "scripts"


def require(module: str) -> ModuleType:
    """`module` imported; skipped locally when it is not installed, a failure under CI=true."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        message = f"{module} is not installed ({error}); `make test` installs it with the dev extra"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)


class Api:
    """Reads of the metadata API the tests check against."""

    def __init__(self, url: str):
        self.url = url

    def get(self, path: str, **params: Any) -> Any:
        response = requests.get(f"{self.url}{path}", params=params, timeout=10)
        response.raise_for_status()
        return response.json()

    def run(self, run_id: str) -> dict[str, Any]:
        return self.get(f"/api/runs/{run_id}")

    def runs(self, experiment: str) -> list[dict[str, Any]]:
        """The runs of the experiment named `experiment` (none when it does not exist)."""
        found = [e for e in self.get("/api/experiments", limit=1000)["items"] if e["name"] == experiment]
        return self.get(f"/api/experiments/{found[0]['id']}")["runs"] if found else []

    def keys(self, run_id: str, rank: int = 0) -> list[str]:
        return self.get(f"/api/runs/{run_id}/keys", rank=rank)["keys"]

    def ranks(self, run_id: str) -> list[int]:
        return self.get(f"/api/runs/{run_id}/keys")["ranks"]

    def series(self, run_id: str, key: str, rank: int = 0) -> dict[int, float]:
        points = self.get(f"/api/runs/{run_id}/metrics/{key}", limit=10000, rank=rank)["points"]
        return {point["step"]: point["value"] for point in points}

    def checkpoints(self, run_id: str) -> list[dict[str, Any]]:
        return self.get(f"/api/runs/{run_id}/checkpoints", limit=1000)["items"]

    def artifacts(self, run_id: str, kind: str | None = None) -> list[dict[str, Any]]:
        params = {"limit": 1000, **({"kind": kind} if kind else {})}
        return self.get(f"/api/runs/{run_id}/artifacts", **params)["items"]

    def wait_status(self, run_id: str, status: str, timeout: float = 30.0) -> dict[str, Any]:
        wait_until(lambda: self.run(run_id)["status"] == status, timeout=timeout, what=f"run {run_id} {status}")
        return self.run(run_id)


def trainer_env(api: Api, workdir: Path, **extra: str) -> dict[str, str]:
    """A trainer subprocess's environment: the API, a free metrics port, no GPU sampling, its own spool."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("TRAINMON_", "_TRAINMON_"))}
    return {**env, "PYTHONUNBUFFERED": "1", "TRAINMON_API_URL": api.url, "TRAINMON_PORT": "0",
            "TRAINMON_GPU": "false", "TRAINMON_SPOOL_DIR": str(workdir / "spool"), "KERAS_BACKEND": "torch",
            "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


def run_script(script: Path, workdir: Path, env: dict[str, str], timeout: float = 300,
               expect_success: bool = True) -> subprocess.CompletedProcess[str]:
    """`python script` in `workdir`; its output is in the assertion message when it fails."""
    result = subprocess.run([sys.executable, str(script)], cwd=workdir, env=env, capture_output=True, text=True,
                            timeout=timeout, stdin=subprocess.DEVNULL)
    if expect_success:
        assert result.returncode == 0, f"{script.name} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def monitor_kwargs(api: Api, workdir: Path) -> dict[str, Any]:
    """`TrainingMonitor` arguments for an in-process trainer: the API, a free port, no sampling, no signals."""
    return {"api_url": api.url, "port": 0, "gpu": False, "system": False, "spool_dir": str(workdir / "spool"),
            "handle_signals": False, "env": {}}


def only_run(api: Api, experiment: str) -> dict[str, Any]:
    runs = api.runs(experiment)
    assert len(runs) == 1, f"{experiment}: expected one run, got {[r['run_id'] for r in runs]}"
    return runs[0]
