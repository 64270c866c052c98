"""`trainmon serve | db | token | prune`: the real installed command, in subprocesses, on a temp SQLite file."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.api import run_api
from support.procs import free_port

TRAINMON = str(Path(sys.executable).with_name("trainmon"))


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a command: settings only from these variables (cwd is tmp_path, no .env there)."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "HOST", "PORT")}
    env.update(DATABASE_URL=f"sqlite:///{tmp_path / 'cli.db'}", ARTIFACT_ROOT=str(tmp_path / "artifacts"),
               LOG_LEVEL="WARNING")
    return env


def trainmon(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([TRAINMON, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.fixture
def server(cli_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    """`trainmon serve` on 127.0.0.1 and a free port, over the commands' database; its base URL."""
    with run_api(cli_env["DATABASE_URL"], tmp_path, command=(TRAINMON, "serve"), log_name="serve.log") as url:
        yield url


def test_db_upgrade_migrates_an_empty_database(cli_env: dict[str, str], tmp_path: Path) -> None:
    before = trainmon(cli_env, tmp_path, "db", "current")
    assert before.returncode == 0 and before.stdout.startswith("none"), before.stderr
    upgraded = trainmon(cli_env, tmp_path, "db", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    revision = upgraded.stdout.split()[-1]
    assert trainmon(cli_env, tmp_path, "db", "current").stdout.strip() == revision
    with sqlite3.connect(tmp_path / "cli.db") as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"runs", "metric_points", "api_tokens", "alembic_version"} <= tables
    assert trainmon(cli_env, tmp_path, "db", "upgrade").returncode == 0  # idempotent


def test_token_create_prints_the_token_once_and_stores_its_hash(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = trainmon(cli_env, tmp_path, "token", "create", "--project", "vision", "--scope", "read")
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip().splitlines()[-1]
    assert token.startswith("tm_") and len(token) > 40
    with sqlite3.connect(tmp_path / "cli.db") as connection:
        rows = connection.execute("SELECT t.token_hash, t.scope, p.name FROM api_tokens t "
                                  "JOIN projects p ON p.id = t.project_id").fetchall()
        dump = "\n".join(connection.iterdump())
    assert rows == [(hashlib.sha256(token.encode()).hexdigest(), "read", "vision")]
    assert token not in dump


def test_token_create_refuses_an_unknown_scope(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = trainmon(cli_env, tmp_path, "token", "create", "--project", "p", "--scope", "admin")
    assert result.returncode == 2 and "invalid choice" in result.stderr


def test_serve_refuses_a_public_bind_without_tokens(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = trainmon(cli_env, tmp_path, "serve", "--host", "0.0.0.0", "--port", str(free_port()))
    assert result.returncode == 2
    assert "refusing to listen on 0.0.0.0" in result.stderr and "--insecure" in result.stderr


def test_bad_settings_end_with_a_message(cli_env: dict[str, str], tmp_path: Path) -> None:
    result = trainmon({**cli_env, "DATABASE_URL": "mysql://nowhere/db"}, tmp_path, "prune")
    assert result.returncode == 2 and "DATABASE_URL" in result.stderr and "Traceback" not in result.stderr


def test_serve_answers_and_prune_deletes_only_old_points(server: str, cli_env: dict[str, str],
                                                         tmp_path: Path) -> None:
    assert requests.post(f"{server}/api/runs", json={"experiment": "cli", "run_id": "cli-run"},
                         timeout=10).status_code == 201
    now = time.time()
    points = [{"key": "loss", "step": step, "value": 1.0, "wall_time": now - 40 * 86_400 + step}
              for step in range(25)]
    points += [{"key": "loss", "step": 100 + step, "value": 2.0, "wall_time": now - 60} for step in range(5)]
    answer = requests.post(f"{server}/api/runs/cli-run/metrics", json={"batch_id": "b1", "points": points},
                           timeout=10)
    assert answer.json() == {"accepted": 30, "duplicate": False}
    result = trainmon(cli_env, tmp_path, "prune", "--days", "30", "--batch-size", "7")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "pruned 25 metric points and 0 ingest records older than 30 days"
    left = requests.get(f"{server}/api/runs/cli-run/metrics/loss", timeout=10).json()["points"]
    assert [p["step"] for p in left] == [100, 101, 102, 103, 104]
    again = trainmon(cli_env, tmp_path, "prune", "--days", "30")
    assert again.stdout.strip() == "pruned 0 metric points and 0 ingest records older than 30 days"
