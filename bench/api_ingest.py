"""Ingest throughput: points/s through HTTP batches (`POST /api/runs/{id}/metrics`, 5,000 points a batch as the
exporter's shipper sends them) into SQLite via a live uvicorn (`python -m trainmon.metadata_api`), against raw
SQLite `executemany` of the same rows, one transaction a batch, into a database migrated the same way, in the
same run. Goal: HTTP >= 50 % of raw. Request bodies are JSON-encoded before the clock starts (the server is
measured, not the client). Prints the median of each over the rounds and their ratio.

    .venv/bin/python bench/api_ingest.py [--points 200000] [--batch 5000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from _common import alternating_rounds
from trainmon.metadata_api import migrations
from trainmon.metadata_api.db import encode_value, make_engine

from devtools.procs import run_api

KEYS = ("loss", "accuracy", "lr", "grad_norm")
GOAL = 0.5


def make_points(count: int) -> list[tuple[str, int, float, float]]:
    """(key, step, value, wall_time), four keys a step, like a training loop logging four scalars."""
    points = []
    for index in range(count):
        step = index // len(KEYS)
        points.append((KEYS[index % len(KEYS)], step, math.exp(-step / 10_000) + (index % 7) * 1e-3,
                       1.7e9 + step * 0.05))
    return points


def http_round(http: requests.Session, url: str, run_id: str, points: list, batch: int) -> float:
    """Points/s for one run's points posted in batches."""
    http.post(f"{url}/api/runs", json={"experiment": "bench-ingest", "run_id": run_id}, timeout=30).raise_for_status()
    bodies = []
    for start in range(0, len(points), batch):
        chunk = [{"key": k, "step": s, "value": v, "wall_time": w} for k, s, v, w in points[start:start + batch]]
        bodies.append(json.dumps({"batch_id": f"{run_id}-{start}", "points": chunk}).encode())
    headers = {"Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        answer = http.post(f"{url}/api/runs/{run_id}/metrics", data=body, headers=headers, timeout=60)
        answer.raise_for_status()
    return len(points) / (time.perf_counter() - started)


def raw_round(database: Path, run_id: str, points: list, batch: int) -> float:
    """Points/s for the same rows with sqlite3 executemany, one transaction a batch, same pragmas."""
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode = WAL")
    connection.execute("PRAGMA synchronous = NORMAL")
    connection.execute("PRAGMA foreign_keys = ON")
    connection.execute("INSERT INTO projects (name, created_at) VALUES (?, '2026-01-01') ON CONFLICT DO NOTHING",
                       ("bench",))
    project_id = connection.execute("SELECT id FROM projects WHERE name = 'bench'").fetchone()[0]
    connection.execute("INSERT INTO experiments (project_id, name, created_at) VALUES (?, ?, '2026-01-01') "
                       "ON CONFLICT DO NOTHING", (project_id, "raw"))
    experiment_id = connection.execute("SELECT id FROM experiments WHERE name = 'raw'").fetchone()[0]
    run_key = connection.execute(
        "INSERT INTO runs (id, project_id, experiment_id, status, start_time, last_heartbeat, params) "
        "VALUES (?, ?, ?, 'RUNNING', '2026-01-01', '2026-01-01', '{}') RETURNING key",
        (run_id, project_id, experiment_id)).fetchone()[0]
    rows = [(run_key, k, s, *encode_value(v), w) for k, s, v, w in points]
    started = time.perf_counter()
    for start in range(0, len(rows), batch):
        connection.execute("BEGIN IMMEDIATE")
        connection.executemany("INSERT INTO metric_points (run_key, key, step, value, special, wall_time) "
                               "VALUES (?, ?, ?, ?, ?, ?)", rows[start:start + batch])
        connection.execute("COMMIT")
    rate = len(rows) / (time.perf_counter() - started)
    connection.close()
    return rate


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    points = make_points(args.points)
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp:
        workdir = Path(tmp)
        raw_db = workdir / "raw.db"
        engine = make_engine(f"sqlite:///{raw_db}")
        migrations.upgrade(engine)
        engine.dispose()
        with run_api(f"sqlite:///{workdir / 'api.db'}", workdir, log_name="server.log") as url, \
                requests.Session() as http:
            rates = alternating_rounds(args.rounds, {
                "http": lambda index: http_round(http, url, f"http-{index}", points, args.batch),
                "raw": lambda index: raw_round(raw_db, f"raw-{index}", points, args.batch)})
    http_rates, raw_rates = rates["http"], rates["raw"]
    http_rate, raw_rate = statistics.median(http_rates), statistics.median(raw_rates)
    ratio = http_rate / raw_rate
    print(f"http   median {http_rate:12,.0f} points/s  ({args.points} points, batches of {args.batch}, "
          f"{args.rounds} rounds: {', '.join(f'{r:,.0f}' for r in http_rates)})")
    print(f"raw    median {raw_rate:12,.0f} points/s  (sqlite3 executemany, same rows, same batches)")
    print(f"ratio  http/raw {ratio:.1%}; goal >= {GOAL:.0%}: {'met' if ratio >= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
