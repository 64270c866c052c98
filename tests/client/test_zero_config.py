"""The first run with no configuration at all: no API URL anywhere -> a local trainmon API when one answers,
else the run is recorded in ./trainmon-runs, and `trainmon serve` started in that folder imports it."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import requests
from support.api import run_api
from support.procs import ManagedProcess, free_port, wait_until
from trainmon.client import discovery
from trainmon.client.spool import find_spools
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration
QUIET = {"port": False, "gpu": False, "system": False, "handle_signals": False, "env": {}}
TRAINMON = shutil.which("trainmon") or str(Path(sys.executable).with_name("trainmon"))


def test_no_url_records_locally_then_trainmon_serve_imports_it(tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="trainmon.client"):
        monitor = TrainingMonitor("zero-config", **QUIET)
    for step in range(200):
        monitor.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
    monitor.log_image("sample", np.zeros((8, 8), dtype=np.uint8), step=10)
    checkpoint = monitor.save_checkpoint({"weights": [1, 2, 3]}, step=199)
    monitor.finish()
    folder = tmp_path / discovery.LOCAL_RUNS_DIR
    assert f"recording run {monitor.run_id} locally in {folder}" in caplog.text
    assert "trainmon serve" in caplog.text and len(find_spools(folder)) == 1

    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("TRAINMON_")}
    server = ManagedProcess([TRAINMON, "serve", "--port", str(port)], tmp_path / "serve.log", env=env, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}"

        def imported() -> bool:
            answer = requests.get(f"{url}/api/runs/{monitor.run_id}", timeout=5)
            return answer.ok and answer.json()["status"] == "COMPLETED"

        wait_until(imported, timeout=90, what="the local run imported")
        wait_until(lambda: not find_spools(folder), timeout=30, what="the local copy removed once imported")
        series = requests.get(f"{url}/api/runs/{monitor.run_id}/metrics/train_loss", params={"limit": 1000},
                              timeout=5).json()
        assert [point["step"] for point in series["points"]] == list(range(200))
        artifacts = requests.get(f"{url}/api/runs/{monitor.run_id}/artifacts", timeout=5).json()["items"]
        assert [artifact["name"] for artifact in artifacts] == ["sample.png"]
        (registered,) = requests.get(f"{url}/api/runs/{monitor.run_id}/checkpoints", timeout=5).json()["items"]
        stored = requests.get(f"{url}/api/runs/{monitor.run_id}/checkpoints/{registered['id']}/file", timeout=5)
        assert stored.content == checkpoint.read_bytes()
    finally:
        server.stop()
    assert "imported 1 of 1 local runs" in server.log_tail()


def test_a_local_api_that_answers_is_used(tmp_path: Path) -> None:
    with run_api(f"sqlite:///{tmp_path / 'local.db'}", tmp_path) as url:
        assert discovery.local_api(url) == url
        assert discovery.local_api(f"http://127.0.0.1:{free_port()}") is None  # nothing there


def test_explicit_none_means_prometheus_only(tmp_path: Path) -> None:
    with TrainingMonitor("no-api", api_url=None, **QUIET) as monitor:
        assert not monitor.recorder.enabled
    assert not (tmp_path / discovery.LOCAL_RUNS_DIR).exists()


def test_another_server_on_the_port_is_not_taken_for_the_api(tmp_path: Path) -> None:
    port = free_port()
    other = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: requests.get(f"http://127.0.0.1:{port}/", timeout=1).ok, timeout=20, what="http.server")
        assert discovery.local_api(f"http://127.0.0.1:{port}") is None
    finally:
        other.terminate()
        other.wait(10)


def test_the_sdk_names_its_project_so_a_shared_run_id_is_never_ambiguous(tmp_path: Path) -> None:
    """A token-less API where the same run id exists in two projects: each trainer still reaches its own run."""
    with run_api(f"sqlite:///{tmp_path / 'shared.db'}", tmp_path) as url:
        monitors = [TrainingMonitor("shared-id", project, run_id="slurm-4242.0", api_url=url,
                                    spool_dir=str(tmp_path / project), **QUIET) for project in ("team-a", "team-b")]
        for index, monitor in enumerate(monitors):
            monitor.log_metrics({"loss": float(index)}, step=0)
            monitor.add_note(f"from {monitor.project_name}")
            monitor.finish()
        for index, project in enumerate(("team-a", "team-b")):
            notes = requests.get(f"{url}/api/runs/slurm-4242.0/notes", params={"project": project}, timeout=5)
            assert [note["text"] for note in notes.json()["items"]] == [f"from {project}"]
            series = requests.get(f"{url}/api/runs/slurm-4242.0/metrics/loss", params={"project": project},
                                  timeout=5).json()
            assert [point["value"] for point in series["points"]] == [float(index)]
            run = requests.get(f"{url}/api/runs/slurm-4242.0", params={"project": project}, timeout=5).json()
            assert run["status"] == "COMPLETED"
