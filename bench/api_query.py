"""A 1,000,000-point series reduced to 2,000 points through the real route (`GET /api/runs/{id}/metrics/{key}
?max_points=2000`, in-process TestClient over a SQLite file). Goal: median <= 100 ms, and the one-step spike kept.

The floor, measured in the same run: one SQL pass over the series' rows (`SELECT count(*), min(value)` over the
same run and key), the least any exact reduction has to read. Prints medians and the route/floor ratio.

    .venv/bin/python bench/api_query.py [--points 1000000] [--max-points 2000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import math
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings

RUN_ID = "bench-query"
KEY = "loss"
GOAL_MS = 100.0


def fill(database: Path, points: int, spike_step: int) -> None:
    """Write the series straight into the API's table (the ingest path has its own bench)."""
    rng = random.Random(1)
    rows = []
    for step in range(points):
        value = 50.0 if step == spike_step else 2.0 * math.exp(-step / (points / 5)) + rng.gauss(0, 0.05)
        rows.append((RUN_ID, KEY, step, value, 0, 1.7e9 + step * 0.01))
    with sqlite3.connect(database) as connection:
        connection.executemany("INSERT INTO metric_points (run_id, key, step, value, special, wall_time) "
                               "VALUES (?, ?, ?, ?, ?, ?)", rows)


def floor_ms(database: Path, repeats: int) -> float:
    connection = sqlite3.connect(database)
    timings = []
    for _ in range(repeats):
        start = time.perf_counter()
        connection.execute("SELECT count(*), min(value) FROM metric_points WHERE run_id = ? AND key = ?",
                           (RUN_ID, KEY)).fetchall()
        timings.append((time.perf_counter() - start) * 1000)
    connection.close()
    return statistics.median(timings)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--max-points", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    spike_step = int(args.points * 0.6180339)
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp:
        database = Path(tmp) / "bench.db"
        settings = Settings(_env_file=None, database_url=f"sqlite:///{database}", artifact_root=Path(tmp))
        with TestClient(create_app(settings)) as client:
            client.post("/api/runs", json={"experiment": "bench", "run_id": RUN_ID}).raise_for_status()
            started = time.perf_counter()
            fill(database, args.points, spike_step)
            print(f"filled {args.points} points in {time.perf_counter() - started:.1f} s")
            url = f"/api/runs/{RUN_ID}/metrics/{KEY}"
            params = {"max_points": args.max_points}
            client.get(url, params=params).raise_for_status()  # warm caches once
            timings, body = [], {}
            for _ in range(args.repeats):
                start = time.perf_counter()
                answer = client.get(url, params=params)
                timings.append((time.perf_counter() - start) * 1000)
                answer.raise_for_status()
                body = answer.json()
        floor = floor_ms(database, args.repeats)
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
