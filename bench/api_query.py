"""A 1,000,000-point series reduced to 2,000 points through the real route (`GET /api/runs/{id}/metrics/{key}
?max_points=2000`, in-process TestClient over a SQLite file, or with --postgres over a throwaway PostgreSQL
started like the tests do). Goal: median <= 100 ms, and the one-step spike kept.

The floor, measured in the same run: one SQL pass over the series' rows (`SELECT count(*), min(value)` over the
same run and key), the least any exact reduction that reads the rows has to do. The route reads the per-block
summaries instead (`repositories.series_blocks`: about 15,625 block rows, plus the points of the blocks that
bucket boundaries cut), so it can beat that floor. Prints medians and the route/floor ratio.

    .venv/bin/python bench/api_query.py [--points 1000000] [--max-points 2000] [--repeats 7] [--postgres]
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from _common import REPO
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.repositories.series_blocks import rebuild_series_blocks
from trainmon.metadata_api.settings import Settings

RUN_ID = "bench-query"
KEY = "loss"
GOAL_MS = 100.0


COLUMNS = "run_key, key, step, value, special, wall_time"


def fill(engine: Engine, points: int, spike_step: int) -> None:
    """Write the series straight into the API's table (the ingest path has its own bench), then its block
    summaries in one statement, as ingest keeps them."""
    rng = random.Random(1)
    with engine.connect() as connection:  # the internal key of the run the API registered
        run_key = connection.execute(text("SELECT key FROM runs WHERE id = :id"), {"id": RUN_ID}).scalar_one()
    rows = []
    for step in range(points):
        value = 50.0 if step == spike_step else 2.0 * math.exp(-step / (points / 5)) + rng.gauss(0, 0.05)
        rows.append((run_key, KEY, step, value, 0, 1.7e9 + step * 0.01))
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        if engine.dialect.name == "sqlite":
            cursor.execute("BEGIN")  # the engine's connections are in autocommit mode (see db.py)
            cursor.executemany(f"INSERT INTO metric_points ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)", rows)
        else:
            with cursor.copy(f"COPY metric_points ({COLUMNS}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            cursor.execute("ANALYZE metric_points")
        connection.commit()
    finally:
        connection.close()
    with engine.begin() as connection:  # the block summaries ingest would have kept (see series_blocks)
        rebuild_series_blocks(connection, (run_key, 0, KEY))
        if engine.dialect.name == "postgresql":
            connection.exec_driver_sql("ANALYZE metric_blocks")


def floor_ms(engine: Engine, repeats: int) -> float:
    query = text("SELECT count(*), min(value) FROM metric_points p JOIN runs r ON r.key = p.run_key "
                 "WHERE r.id = :run AND p.key = :key")
    timings = []
    with engine.connect() as connection:
        for _ in range(repeats):
            start = time.perf_counter()
            connection.execute(query, {"run": RUN_ID, "key": KEY}).fetchall()
            timings.append((time.perf_counter() - start) * 1000)
    return statistics.median(timings)


@contextlib.contextmanager
def database(postgres: bool, tmp: str) -> Iterator[str]:
    if not postgres:
        yield f"sqlite:///{Path(tmp) / 'bench.db'}"
        return
    sys.path.insert(0, str(REPO / "tests"))
    from support.procs import run_postgres

    with run_postgres() as url:
        yield url


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--postgres", action="store_true", help="run on a throwaway PostgreSQL instead of SQLite")
    args = parser.parse_args()
    spike_step = int(args.points * 0.6180339)
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp, database(args.postgres, tmp) as url:
        settings = Settings(_env_file=None, database_url=url, artifact_root=Path(tmp), allowed_hosts="testserver")
        app = create_app(settings)
        with TestClient(app) as client:
            client.post("/api/runs", json={"experiment": "bench", "run_id": RUN_ID}).raise_for_status()
            started = time.perf_counter()
            fill(app.state.engine, args.points, spike_step)
            print(f"filled {args.points} points into {app.state.engine.dialect.name} "
                  f"in {time.perf_counter() - started:.1f} s")
            url_path = f"/api/runs/{RUN_ID}/metrics/{KEY}"
            params = {"max_points": args.max_points}
            client.get(url_path, params=params).raise_for_status()  # warm caches once
            timings, body = [], {}
            for _ in range(args.repeats):
                start = time.perf_counter()
                answer = client.get(url_path, params=params)
                timings.append((time.perf_counter() - start) * 1000)
                answer.raise_for_status()
                body = answer.json()
            floor = floor_ms(app.state.engine, args.repeats)
    route = statistics.median(timings)
    steps = {point["step"]: point["value"] for point in body["points"]}
    spike_kept = steps.get(spike_step) == 50.0
    print(f"route  median {route:8.1f} ms  ({len(body['points'])} points from {args.points}, "
          f"{args.repeats} runs, min {min(timings):.1f} max {max(timings):.1f})")
    print(f"floor  median {floor:8.1f} ms  (one SQL pass over the rows: count(*), min(value))")
    verdict = "met" if route <= GOAL_MS else "MISSED"
    print(f"ratio  route/floor {route / floor:.2f}x; goal <= {GOAL_MS:.0f} ms: {verdict}")
    print(f"spike at step {spike_step}: {'kept' if spike_kept else 'LOST'}")
    return 0 if spike_kept and len(body["points"]) <= args.max_points else 1


if __name__ == "__main__":
    sys.exit(main())
