"""Issue 4's proofs against the real metadata API (uvicorn subprocess, real SQLite file): nothing lost when
the API is SIGKILLed and restarted, down for the whole run, or when the trainer itself is killed -9."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from apiserver import ApiServer, python_env
from support.procs import ManagedProcess, wait_until

pytestmark = pytest.mark.integration
TRAINER = Path(__file__).with_name("trainer.py")


def expected_points(steps: int, keys: int) -> list[tuple[str, int, float]]:
    return sorted((f"k{index}", step, index * 1_000_000 + step + 0.25) for index in range(keys)
                  for step in range(steps))


def start_trainer(tmp_path: Path, run_id: str, env: dict[str, str], *args: str) -> ManagedProcess:
    return ManagedProcess([sys.executable, str(TRAINER), "--run-id", run_id, *args], tmp_path / "trainer.log",
                          env=python_env(**env), cwd=tmp_path)


def trainer_stats(trainer: ManagedProcess) -> dict[str, int]:
    line = next(line for line in trainer.log_tail(100_000).splitlines() if line.startswith("STATS "))
    return json.loads(line[len("STATS "):])


def trainmon_sync(spool_dir: Path, api_url: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trainmon.client.cli", "sync", str(spool_dir), "--api-url",
                           api_url], capture_output=True, text=True, timeout=120, env=python_env())


def test_api_sigkilled_and_restarted_ten_times_loses_and_duplicates_nothing(
        tmp_path: Path, api_server: ApiServer) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    run_id = f"chaos-{uuid.uuid4().hex[:8]}"
    steps, keys = 25_000, 4  # 100,000 points
    trainer = start_trainer(tmp_path, run_id, {"TRAINMON_API_URL": api_server.url,
                                               "TRAINMON_SPOOL_DIR": str(tmp_path / "spool"),
                                               "TRAINMON_FLUSH_TIMEOUT": "120"},
                            "--steps", str(steps), "--keys", str(keys), "--pause-every", "100", "--pause", "0.04")
    try:
        wait_until(lambda: "STARTED" in trainer.log_tail(), timeout=60, what="the trainer to start")
        for _ in range(10):
            time.sleep(rng.uniform(0.05, 1.2))
            api_server.kill()
            time.sleep(rng.uniform(0.0, 0.6))
            api_server.start()
        wait_until(lambda: not trainer.alive(), timeout=150, what="the trainer to finish")
    finally:
        trainer.stop()
    assert trainer.proc.returncode == 0 and "DONE" in trainer.log_tail(), trainer.log_tail()
    points = api_server.points(run_id)
    assert len(points) == steps * keys, f"seed {seed}: {len(points)} points stored"
    assert sorted(points) == expected_points(steps, keys), f"seed {seed}"
    assert api_server.status(run_id) == "COMPLETED"
    assert api_server.starts == 11
    stats = trainer_stats(trainer)
    assert stats["spooled"] > 0 and stats["replayed"] > 0 and stats["dropped"] == 0, stats  # the outages were felt


def test_api_down_for_the_whole_run_then_trainmon_sync_completes_it(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path)  # not started: nothing listens on its port during the run
    run_id = f"offline-{uuid.uuid4().hex[:8]}"
    spool_dir = tmp_path / "spool"
    trainer = start_trainer(tmp_path, run_id, {"TRAINMON_API_URL": server.url, "TRAINMON_SPOOL_DIR": str(spool_dir),
                                               "TRAINMON_FLUSH_TIMEOUT": "1"}, "--steps", "3000", "--keys", "3")
    wait_until(lambda: not trainer.alive(), timeout=60, what="the trainer to finish")
    trainer.stop()
    assert trainer.proc.returncode == 0 and "DONE" in trainer.log_tail(), trainer.log_tail()
    assert "trainmon sync" in trainer.log_tail()  # it told the user what to do
    server.start()
    try:
        result = trainmon_sync(spool_dir, server.url)
        assert result.returncode == 0, result.stderr
        assert "100%" in result.stderr and "records uploaded" in result.stderr
        assert sorted(server.points(run_id)) == expected_points(3000, 3)
        run = server.get(f"/api/runs/{run_id}")
        assert run["status"] == "COMPLETED"
        assert run["params"] == {"lr": 0.1, "model": {"depth": 4}} and run["tags"] == {"suite": "sdk"}
        assert not any(spool_dir.iterdir())  # uploaded spools are removed
        again = trainmon_sync(spool_dir, server.url)  # idempotent: nothing left, nothing doubled
        assert again.returncode == 0 and len(server.points(run_id)) == 9000
    finally:
        server.stop()


def test_trainer_killed_9_shows_crashed_then_sync_completes_the_data(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path, heartbeat_timeout=2.0)
    server.start()
    run_id = f"killed-{uuid.uuid4().hex[:8]}"
    spool_dir = tmp_path / "spool"
    go = tmp_path / "go"
    trainer = start_trainer(tmp_path, run_id, {"TRAINMON_API_URL": server.url, "TRAINMON_SPOOL_DIR": str(spool_dir),
                                               "TRAINMON_HEARTBEAT_INTERVAL": "0.5"},
                            "--steps", "4000", "--keys", "2", "--wait-file", str(go), "--hang")
    try:
        wait_until(lambda: "STARTED" in trainer.log_tail(), timeout=60, what="the trainer to start")
        time.sleep(3.0)  # longer than the heartbeat timeout: only heartbeats keep the idle run alive
        assert server.status(run_id) == "RUNNING"
        server.kill()  # the API goes away: what the trainer logs now waits in its spool
        go.touch()
        wait_until(lambda: "SAFE" in trainer.log_tail(), timeout=60, what="the trainer to spool its points")
        trainer.kill()  # kill -9: no finish, no flush
        server.start()
        server.wait_status(run_id, "CRASHED", timeout=30)  # heartbeats stopped
        assert server.points(run_id) == []
        result = trainmon_sync(spool_dir, server.url)
        assert result.returncode == 0, result.stderr
        assert sorted(server.points(run_id)) == expected_points(4000, 2)
        assert server.status(run_id) == "CRASHED"
    finally:
        trainer.stop()
        server.stop()


def test_sigterm_finishes_the_run_as_failed_with_every_point(tmp_path: Path, api_server: ApiServer) -> None:
    run_id = f"sigterm-{uuid.uuid4().hex[:8]}"
    trainer = start_trainer(tmp_path, run_id, {"TRAINMON_API_URL": api_server.url,
                                               "TRAINMON_SPOOL_DIR": str(tmp_path / "spool")},
                            "--steps", "2000", "--keys", "2", "--hang", "--signals")
    try:
        wait_until(lambda: "SAFE" in trainer.log_tail(), timeout=60, what="the trainer to log")
        trainer.proc.send_signal(signal.SIGTERM)
        trainer.proc.wait(timeout=60)
    finally:
        trainer.stop()
    assert trainer.proc.returncode == -signal.SIGTERM  # the default action ran after finishing
    assert api_server.status(run_id) == "FAILED"
    assert sorted(api_server.points(run_id)) == expected_points(2000, 2)
