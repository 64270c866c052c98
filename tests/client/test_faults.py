"""The fault matrix, against real servers: a poison record mid-stream (both databases), a full disk under the
spool with the API down, then back, and an unwritable spool folder with the API up. In each: points logged =
points stored + points counted as dropped, exactly, and the final status reaches the API (directly, or through
`trainmon sync`)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from apiserver import ApiServer, python_env
from support.api import run_api
from support.faults import FaultProxy, tmpfs
from support.procs import fresh_postgres_database
from trainmon.client.dead_letters import DeadLetters
from trainmon.client.spool import find_spools
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration
QUIET = {"port": False, "gpu": False, "system": False, "handle_signals": False}


@pytest.fixture(params=["sqlite", "postgres"])
def api_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            database = f"sqlite:///{tmp_path / 'faults.db'}"
        else:
            database = stack.enter_context(fresh_postgres_database(request.getfixturevalue("postgres_url")))
        yield stack.enter_context(run_api(database, tmp_path))


def stored(url: str, run_id: str, key: str) -> list[tuple[int, float]]:
    """Every stored point of one key, paged through the API."""
    points, after = [], None
    while True:
        params = {"limit": 10_000, **({"after_step": after} if after is not None else {})}
        page = requests.get(f"{url}/api/runs/{run_id}/metrics/{key}", params=params, timeout=30)
        if page.status_code == 404:
            return points
        page.raise_for_status()
        body = page.json()
        points += [(point["step"], point["value"]) for point in body["points"]]
        after = body["next_after_step"]
        if after is None:
            return points


def status(url: str, run_id: str) -> str:
    return requests.get(f"{url}/api/runs/{run_id}", timeout=10).json()["status"]


def sync(spool: Path, url: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainmon.client.cli", "sync", str(spool), "--api-url", url,
                           "--retries", "3", *flags], capture_output=True, text=True, timeout=300, env=python_env())


def test_a_poison_record_is_set_aside_and_everything_after_it_arrives(api_url: str, tmp_path: Path) -> None:
    run_id = f"poison-{uuid.uuid4().hex[:8]}"
    spool = tmp_path / "spool"
    with FaultProxy(api_url, poison=b"POISON-500") as proxy:
        monitor = TrainingMonitor("faults", run_id=run_id, env={}, api_url=proxy.url, spool_dir=str(spool), **QUIET)
        for step in range(1100):
            monitor.log_metrics({"loss": step + 0.5}, step=step)
            if step == 100:
                monitor.log_text("a NUL \x00 byte")  # refused for good (422): a permanent rejection
            if step == 200:
                monitor.add_note("POISON-500: the server fails on this one every time")  # 500, again and again
        monitor.finish()
    assert proxy.poisoned >= 5
    assert stored(api_url, run_id, "loss") == [(step, step + 0.5) for step in range(1100)]
    assert status(api_url, run_id) == "COMPLETED"
    assert monitor.counters.rejected["note"] == 1 and monitor.counters.rejected["logs"] == 1
    assert sum(monitor.counters.dropped.values()) == 0
    (directory,) = find_spools(spool)  # kept: it holds dead letters
    assert [entry["record"]["op"] for entry in DeadLetters(directory).entries()] == ["logs", "note"]

    listed = sync(spool, api_url)  # lists the dead letters, keeps them
    assert "2 records refused by the API" in listed.stderr, listed.stderr
    retried = sync(spool, api_url, "--retry-rejected")  # "after a server fix": no proxy in front any more
    assert "1 of 2 refused records delivered" in retried.stderr, retried.stderr
    notes = requests.get(f"{api_url}/api/runs/{run_id}/notes", timeout=10).json()["items"]
    assert [note["text"] for note in notes] == ["POISON-500: the server fails on this one every time"]
    assert [entry["record"]["op"] for entry in DeadLetters(directory).entries()] == ["logs"]  # still refused


def test_a_full_disk_counts_every_point_it_cannot_keep_and_keeps_the_final_status(tmp_path: Path) -> None:
    server = ApiServer(tmp_path)  # not started yet: the API is down while the trainer runs
    run_id = f"full-{uuid.uuid4().hex[:8]}"
    keys = [f"k{index}" for index in range(4)]
    steps = 15_000
    with tmpfs(tmp_path / "spool", "2m") as spool:
        monitor = TrainingMonitor("faults", run_id=run_id, env={"TRAINMON_FLUSH_TIMEOUT": "2"},
                                  api_url=server.url, spool_dir=str(spool), **QUIET)
        for step in range(steps):
            monitor.log_metrics({key: step + index / 8 for index, key in enumerate(keys)}, step=step)
        monitor.finish()
        dropped = sum(monitor.counters.dropped.values())
        assert 0 < dropped < steps * len(keys)
        server.start()
        try:
            result = sync(spool, server.url)
            assert result.returncode == 0, result.stderr
            kept = sum(len(stored(server.url, run_id, key)) for key in keys)
            assert kept + dropped == steps * len(keys)
            assert status(server.url, run_id) == "COMPLETED"  # kept beside the spool, delivered by sync
        finally:
            server.stop()


def test_an_unwritable_spool_folder_ships_from_memory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run_id = f"readonly-{uuid.uuid4().hex[:8]}"
    with run_api(f"sqlite:///{tmp_path / 'ro.db'}", tmp_path) as url, \
            tmpfs(tmp_path / "readonly", "1m", read_only=True) as readonly:
        monitor = TrainingMonitor("faults", run_id=run_id, env={}, api_url=url, spool_dir=str(readonly / "spool"),
                                  **QUIET)
        for step in range(1000):
            monitor.log_metrics({"a": step, "b": -step, "c": step / 2, "d": 1.0}, step=step)
        monitor.add_note("recorded without a spool")
        monitor.finish()
        assert sum(len(stored(url, run_id, key)) for key in "abcd") == 4000
        assert status(url, run_id) == "COMPLETED" and sum(monitor.counters.dropped.values()) == 0
    assert "shipping from memory only" in caplog.text


def test_metric_batches_are_the_heartbeat_while_a_run_logs(tmp_path: Path) -> None:
    """At 64 ranks heartbeats were a quarter of all requests: a rank that ships batches sends none; an idle one
    still does."""
    with run_api(f"sqlite:///{tmp_path / 'hb.db'}", tmp_path) as url:
        monitor = TrainingMonitor("faults", env={"TRAINMON_HEARTBEAT_INTERVAL": "2"}, api_url=url,
                                  spool_dir=str(tmp_path / "spool"), **QUIET)
        shipper = monitor.recorder.shipper
        for step in range(600):  # 6 s of logging: a batch every second
            monitor.log_metrics({"loss": 1.0}, step=step)
            time.sleep(0.01)
        busy = shipper.stats["heartbeats"]
        time.sleep(5)  # idle: no batch proves liveness any more
        idle = shipper.stats["heartbeats"] - busy
        monitor.finish()
    assert busy <= 1 and idle >= 1, (busy, idle)
