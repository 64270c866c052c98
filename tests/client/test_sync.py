"""`trainmon sync`: order-independent replay, an API that is down, a spool in use, progress output."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import requests
from apiserver import ApiServer, python_env
from trainmon.client.spool import Spool
from trainmon.common.wire import points_json

pytestmark = pytest.mark.integration


def sync(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainmon.client.cli", "sync", *args], capture_output=True,
                          text=True, timeout=120, env=python_env())


def write_spool(directory: Path, run_id: str, api_url: str | None) -> None:
    """A spool whose metric batches come before the run's registration (as after a full-queue spill)."""
    body = {"experiment": "sync-test", "run_id": run_id, "params": {"seed": 1}}
    with Spool(directory, meta={"api_url": api_url, "run_id": run_id, "run": body}) as spool:
        for batch in range(3):
            points = [("loss", step, step / 10, 1.0 + step) for step in range(batch * 100, batch * 100 + 100)]
            spool.append({"op": "metrics", "run_id": run_id, "batch_id": f"b{batch}", "points": points_json(points)})
        spool.append({"op": "run", "run_id": run_id, "body": body})
        spool.append({"op": "status", "run_id": run_id, "status": "COMPLETED"})


def test_sync_creates_the_run_first_when_points_were_spooled_ahead_of_it(tmp_path: Path,
                                                                         api_server: ApiServer) -> None:
    run_id = f"sync-{uuid.uuid4().hex[:8]}"
    write_spool(tmp_path / "spool" / "one", run_id, api_server.url)
    result = sync(str(tmp_path / "spool"))  # the API URL comes from the spool's meta.json
    assert result.returncode == 0, result.stderr
    assert "sync one:   0%" in result.stderr and "sync one: 100% (5/5 records)" in result.stderr
    assert sorted(api_server.points(run_id)) == [("loss", step, step / 10) for step in range(300)]
    run = api_server.get(f"/api/runs/{run_id}")
    assert run["status"] == "COMPLETED" and run["params"] == {"seed": 1}
    assert not (tmp_path / "spool" / "one").exists()


def test_sync_with_the_api_down_keeps_the_spool_and_resumes_later(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path)
    run_id = f"later-{uuid.uuid4().hex[:8]}"
    spool_dir = tmp_path / "spool"
    write_spool(spool_dir, run_id, None)
    no_url = sync(str(spool_dir))
    assert no_url.returncode == 1 and "no API URL" in no_url.stderr
    down = sync(str(spool_dir), "--api-url", server.url, "--retries", "2")
    assert down.returncode == 1 and "run sync again" in down.stderr
    assert spool_dir.exists()
    server.start()
    try:
        up = sync(str(spool_dir), "--api-url", server.url)
        assert up.returncode == 0, up.stderr
        assert len(server.points(run_id)) == 300 and server.status(run_id) == "COMPLETED"
    finally:
        server.stop()


def test_a_spool_in_use_is_skipped(tmp_path: Path) -> None:
    with Spool(tmp_path / "busy", meta={"api_url": "http://127.0.0.1:9", "run_id": "r"}) as spool:
        spool.append({"op": "note", "run_id": "r", "text": "x"})
        result = sync(str(tmp_path))
    assert result.returncode == 0 and "in use" in result.stderr
    assert (tmp_path / "busy").exists()


def test_nothing_to_sync(tmp_path: Path) -> None:
    result = sync(str(tmp_path / "missing"))
    assert result.returncode == 1 and "no spool" in result.stderr


def test_sync_does_not_revive_a_crashed_run(tmp_path: Path, api_server: ApiServer) -> None:
    run_id = f"crashed-{uuid.uuid4().hex[:8]}"
    body = {"experiment": "sync-test", "run_id": run_id}
    requests.post(f"{api_server.url}/api/runs", json=body, timeout=10).raise_for_status()
    requests.post(f"{api_server.url}/api/runs/{run_id}/status", json={"status": "CRASHED"},
                  timeout=10).raise_for_status()
    with Spool(tmp_path / "spool", meta={"api_url": api_server.url, "run_id": run_id, "run": body}) as spool:
        spool.append({"op": "run", "run_id": run_id, "body": body})  # registered again on replay? must not be
        spool.append({"op": "metrics", "run_id": run_id, "batch_id": "b0",
                      "points": points_json([("loss", 0, 1.0, 1.0)])})
    result = sync(str(tmp_path / "spool"))
    assert result.returncode == 0, result.stderr
    assert api_server.points(run_id) == [("loss", 0, 1.0)] and api_server.status(run_id) == "CRASHED"
