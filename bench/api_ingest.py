"""Ingest throughput: points/s through HTTP batches (`POST /api/runs/{id}/metrics`, 5,000 points a batch as the
exporter's shipper sends them) via a live uvicorn (`python -m trainmon.metadata_api`), against raw `executemany` of
the same rows, one transaction a batch, into a database migrated the same way, in the same run: SQLite (a file each,
`sqlite3`), or with `--postgres` a throwaway PostgreSQL cluster started the way the tests start one (a database
each, `psycopg`). Goal: HTTP >= 60 % of raw. Request bodies are JSON-encoded before the clock starts (the server
is measured, not the client). Bodies carry `rows` (one `[step, wall_time, {key: value}]` a logged step: what the
SDK sends), or with `--form points` one object a point. Prints the median of each over the rounds and their ratio.

    .venv/bin/python bench/api_ingest.py [--points 200000] [--batch 5000] [--rounds 3] [--postgres]
                                         [--form rows|points]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests
from _common import REPO, alternating_rounds, bench_database
from trainmon.metadata_api import migrations
from trainmon.metadata_api.db import PAGE_CACHE_KIB, encode_value, make_engine

from devtools.procs import run_api

KEYS = ("loss", "accuracy", "lr", "grad_norm")
GOAL = 0.6
INSERT = ("INSERT INTO metric_points (run_key, key, step, value, special, wall_time) "
          "VALUES ({0}, {0}, {0}, {0}, {0}, {0})")


def make_points(count: int) -> list[tuple[str, int, float, float]]:
    """(key, step, value, wall_time), four keys a step, like a training loop logging four scalars."""
    points = []
    for index in range(count):
        step = index // len(KEYS)
        points.append((KEYS[index % len(KEYS)], step, math.exp(-step / 10_000) + (index % 7) * 1e-3,
                       1.7e9 + step * 0.05))
    return points


def request_body(batch_id: str, chunk: list[tuple[str, int, float, float]], form: str) -> bytes:
    """One request body of `chunk` in the `rows` or `points` form."""
    if form == "points":
        return json.dumps({"batch_id": batch_id, "points": [{"key": k, "step": s, "value": v, "wall_time": w}
                                                            for k, s, v, w in chunk]}).encode()
    rows: dict[int, list] = {}
    for key, step, value, wall_time in chunk:
        rows.setdefault(step, [step, wall_time, {}])[2][key] = value
    return json.dumps({"batch_id": batch_id, "rows": list(rows.values())}).encode()


def http_round(http: requests.Session, url: str, run_id: str, points: list, batch: int, form: str) -> float:
    """Points/s for one run's points posted in batches."""
    http.post(f"{url}/api/runs", json={"experiment": "bench-ingest", "run_id": run_id}, timeout=30).raise_for_status()
    bodies = [request_body(f"{run_id}-{start}", points[start:start + batch], form)
              for start in range(0, len(points), batch)]
    headers = {"Content-Type": "application/json"}
    started = time.perf_counter()
    for body in bodies:
        answer = http.post(f"{url}/api/runs/{run_id}/metrics", data=body, headers=headers, timeout=60)
        answer.raise_for_status()
    return len(points) / (time.perf_counter() - started)


def raw_round(connect: Callable[[], Any], run_id: str, points: list, batch: int) -> float:
    """Points/s for the same rows with the driver's `executemany`, one transaction a batch, into a run of their
    own (`connect()`: a sqlite3 connection in autocommit mode with the API's pragmas, or a psycopg one)."""
    connection = connect()
    try:
        sqlite = isinstance(connection, sqlite3.Connection)
        mark = "?" if sqlite else "%s"
        run_key = raw_run(connection, run_id, mark)
        rows = [(run_key, k, s, *encode_value(v), w) for k, s, v, w in points]
        insert = INSERT.format(mark)
        started = time.perf_counter()
        for start in range(0, len(rows), batch):
            if sqlite:
                connection.execute("BEGIN IMMEDIATE")
                connection.executemany(insert, rows[start:start + batch])
                connection.execute("COMMIT")
            else:
                with connection.cursor() as cursor:
                    cursor.executemany(insert, rows[start:start + batch])
                connection.commit()
        return len(rows) / (time.perf_counter() - started)
    finally:
        connection.close()


def sqlite_connect(path: Path) -> Callable[[], sqlite3.Connection]:
    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode = WAL")
        connection.execute("PRAGMA synchronous = NORMAL")
        connection.execute("PRAGMA foreign_keys = ON")
        connection.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")  # the API's own settings
        connection.execute("PRAGMA temp_store = MEMORY")
        return connection

    return connect


def raw_run(connection: Any, run_id: str, mark: str) -> int:
    """A run row (and its project and experiment) for the raw rows; its key."""
    def one(sql: str, *parameters: Any) -> Any:
        cursor = connection.execute(sql.format(mark), parameters)
        row = cursor.fetchone() if cursor.description else None
        return row[0] if row else None

    one("INSERT INTO projects (name, created_at) VALUES ({0}, '2026-01-01') ON CONFLICT DO NOTHING", "bench")
    project_id = one("SELECT id FROM projects WHERE name = {0}", "bench")
    one("INSERT INTO experiments (project_id, name, created_at) VALUES ({0}, {0}, '2026-01-01') ON CONFLICT DO NOTHING",
        project_id, "raw")
    experiment_id = one("SELECT id FROM experiments WHERE name = {0}", "raw")
    run_key = one("INSERT INTO runs (id, project_id, experiment_id, status, start_time, last_heartbeat, params) "
                  "VALUES ({0}, {0}, {0}, 'RUNNING', '2026-01-01', '2026-01-01', '{{}}') RETURNING key",
                  run_id, project_id, experiment_id)
    if not isinstance(connection, sqlite3.Connection):
        connection.commit()
    return run_key


@contextlib.contextmanager
def databases(postgres: bool, workdir: Path) -> Iterator[tuple[str, Callable[[], Any]]]:
    """(the API's database URL, a connect function for the raw rows' database), both migrated: two SQLite files,
    or two databases of one throwaway PostgreSQL cluster."""
    with bench_database(postgres, workdir, name="api.db") as (api_url, _postmaster):
        if not postgres:
            _migrate(f"sqlite:///{workdir / 'raw.db'}")
            yield api_url, sqlite_connect(workdir / "raw.db")
            return
        if str(REPO / "tests") not in sys.path:
            sys.path.insert(0, str(REPO / "tests"))
        import psycopg
        from support.procs import fresh_postgres_database

        with fresh_postgres_database(api_url, prefix="api") as api_db, \
                fresh_postgres_database(api_url, prefix="raw") as raw_db:
            _migrate(raw_db)
            yield api_db, lambda: psycopg.connect(raw_db.replace("postgresql+psycopg://", "postgresql://"))


def _migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        migrations.upgrade(engine)
    finally:
        engine.dispose()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgres", action="store_true", help="a throwaway PostgreSQL instead of SQLite files")
    parser.add_argument("--form", choices=("rows", "points"), default="rows",
                        help="request bodies as the SDK sends them (rows) or one object a point")
    args = parser.parse_args()
    points = make_points(args.points)
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp:
        workdir = Path(tmp)
        with databases(args.postgres, workdir) as (api_url, connect), \
                run_api(api_url, workdir, log_name="server.log") as url, requests.Session() as http:
            rates = alternating_rounds(args.rounds, {
                "http": lambda index: http_round(http, url, f"http-{index}", points, args.batch, args.form),
                "raw": lambda index: raw_round(connect, f"raw-{index}", points, args.batch)})
    http_rates, raw_rates = rates["http"], rates["raw"]
    http_rate, raw_rate = statistics.median(http_rates), statistics.median(raw_rates)
    ratio = http_rate / raw_rate
    database, driver = ("PostgreSQL", "psycopg") if args.postgres else ("SQLite", "sqlite3")
    print(f"http   median {http_rate:12,.0f} points/s  ({database}, {args.form}; {args.points} points, "
          f"batches of {args.batch}, "
          f"{args.rounds} rounds: {', '.join(f'{r:,.0f}' for r in http_rates)})")
    print(f"raw    median {raw_rate:12,.0f} points/s  ({driver} executemany, same rows, same batches)")
    print(f"ratio  http/raw {ratio:.1%}; goal >= {GOAL:.0%}: {'met' if ratio >= GOAL else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
