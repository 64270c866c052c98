"""uvicorn's access log under the real server (`logging.RoutineWriteFilter`): at INFO, the trainers' routine writes
that succeed are left out and everything else is logged; at DEBUG everything is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from support.api import run_api
from support.procs import wait_until

RUN = {"experiment": "e", "run_id": "r"}
BATCH = {"batch_id": "b1", "rows": [[1, None, {"loss": 1.0}]]}


def access_lines(log: Path) -> list[str]:
    messages = [json.loads(line)["message"] for line in log.read_text().splitlines() if line.startswith("{")]
    return [message for message in messages if '"' in message and " HTTP/" in message]


def traffic(url: str) -> None:
    assert requests.post(f"{url}/api/runs", json=RUN, timeout=10).status_code == 201
    assert requests.post(f"{url}/api/runs/r/metrics", json=BATCH, timeout=10).status_code == 200
    assert requests.post(f"{url}/api/runs/r/heartbeat", timeout=10).status_code == 204
    assert requests.post(f"{url}/api/runs/r/metrics?project=default", json=BATCH, timeout=10).status_code == 200
    assert requests.post(f"{url}/api/runs/nope/metrics", json=BATCH, timeout=10).status_code == 404
    assert requests.get(f"{url}/api/runs/r", timeout=10).status_code == 200


@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_routine_writes_leave_the_access_log_at_info(tmp_path: Path, level: str) -> None:
    with run_api(f"sqlite:///{tmp_path / 'api.db'}", tmp_path, LOG_LEVEL=level) as url:
        traffic(url)
        wait_until(lambda: any("GET /api/runs/r " in line for line in access_lines(tmp_path / "api.log")),
                   timeout=10, what="the access log's last line")
    lines = access_lines(tmp_path / "api.log")
    logged = {(line.split('"')[1], line.rsplit(" ", 1)[-1]) for line in lines}
    assert ("POST /api/runs HTTP/1.1", "201") in logged
    assert ("POST /api/runs/nope/metrics HTTP/1.1", "404") in logged  # a failed write is always logged
    assert ("GET /api/runs/r HTTP/1.1", "200") in logged
    routine = {("POST /api/runs/r/metrics HTTP/1.1", "200"), ("POST /api/runs/r/heartbeat HTTP/1.1", "204"),
               ("POST /api/runs/r/metrics?project=default HTTP/1.1", "200")}
    assert routine & logged == (routine if level == "DEBUG" else set())
