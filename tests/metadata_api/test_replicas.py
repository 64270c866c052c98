"""Two API replicas on one database: the background jobs (crash sweep, retention) run on exactly one of them at
a time, a crashed run is marked and counted once, and the other replica takes over when the leader dies."""

from __future__ import annotations

import contextlib
import re
import signal
from pathlib import Path

import pytest
import requests
from support.api import api_environment, start_api
from support.procs import free_port, fresh_postgres_database, wait_until

pytestmark = pytest.mark.integration
FAST_JOBS = {"HEARTBEAT_TIMEOUT_SECONDS": "1", "CRASH_CHECK_INTERVAL_SECONDS": "0.2",
             "RETENTION_INTERVAL_SECONDS": "0.2"}


def metric(url: str, name: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    values = [float(match) for match in re.findall(rf"^{re.escape(name)} (\S+)$", text, re.M)]
    return sum(values)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_one_replica_runs_the_jobs_and_another_takes_over(backend: str, tmp_path: Path,
                                                          request: pytest.FixtureRequest) -> None:
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            database = f"sqlite:///{tmp_path / 'replicas.db'}"
        else:
            database = stack.enter_context(fresh_postgres_database(request.getfixturevalue("postgres_url")))
        replicas = []
        for index in range(2):
            port = free_port()
            workdir = tmp_path / f"replica-{index}"
            workdir.mkdir()
            process = start_api(api_environment(database, workdir, port, **FAST_JOBS), workdir, port)
            stack.callback(process.stop)
            replicas.append((process, f"http://127.0.0.1:{port}"))
        urls = [url for _process, url in replicas]

        def leaders() -> list[float]:
            return [metric(url, "trainmon_api_background_jobs_leader") for url in urls]

        wait_until(lambda: sum(leaders()) == 1, timeout=30, what="exactly one leading replica")
        leader = leaders().index(1.0)

        for index in range(5):  # runs whose trainers fall silent: each is marked CRASHED once, by the leader
            requests.post(f"{urls[index % 2]}/api/runs", json={"experiment": "replicas", "run_id": f"r{index}"},
                          timeout=10).raise_for_status()
        wait_until(lambda: all(requests.get(f"{urls[0]}/api/runs/r{index}", timeout=5).json()["status"] == "CRASHED"
                               for index in range(5)), timeout=30, what="the silent runs marked CRASHED")
        crashed = [metric(url, 'trainmon_api_run_status_changes_total{status="CRASHED"}') for url in urls]
        assert crashed[leader] == 5 and crashed[1 - leader] == 0, crashed
        assert sum(leaders()) == 1

        process, _url = replicas[leader]  # the leader dies; the other takes the jobs over
        process.kill(signal.SIGKILL)
        process.stop()
        wait_until(lambda: metric(urls[1 - leader], "trainmon_api_background_jobs_leader") == 1, timeout=30,
                   what="the surviving replica leading")
        requests.post(f"{urls[1 - leader]}/api/runs", json={"experiment": "replicas", "run_id": "after"},
                      timeout=10).raise_for_status()
        wait_until(lambda: requests.get(f"{urls[1 - leader]}/api/runs/after", timeout=5).json()["status"]
                   == "CRASHED", timeout=30, what="the crash sweep running on the new leader")
