"""Does a hanging Alertmanager slow the metadata API's status changes? (lifecycle notifications)

Times `POST /api/runs/{id}/status` (RUNNING -> FAILED) through the real app (TestClient, SQLite file) with
notifications off (the floor) and on, pointed at an Alertmanager that accepts connections and never answers.
Prints medians and p90 of both and the ratio of each median to the floor's; close to 1.0 means posting stays off
the request path.

    .venv/bin/python bench/notify_latency.py [--runs 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from _common import alternating_rounds, hanging_listener, print_medians
from fastapi.testclient import TestClient
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings

OFF = "notifications off"


def time_status_changes(runs: int, **settings: object) -> list[float]:
    """Seconds of each of `runs` status changes through a fresh app over a fresh SQLite file."""
    seconds = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        app = create_app(Settings(_env_file=None, database_url=f"sqlite:///{folder / 'bench.db'}",
                                  artifact_root=folder, crash_check_interval_seconds=3600,
                                  retention_interval_seconds=3600, allowed_hosts="testserver", **settings))
        with TestClient(app) as api:
            ids = [api.post("/api/runs", json={"experiment": "bench"}).json()["run_id"] for _ in range(runs)]
            for run_id in ids:
                started = time.perf_counter()
                response = api.post(f"/api/runs/{run_id}/status", json={"status": "FAILED"})
                seconds.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="status changes per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("trainmon.metadata_api.notifications").setLevel(logging.ERROR)  # 1 warning per timeout
    server, url = hanging_listener()  # an Alertmanager that accepts connections and never answers
    try:
        rounds = alternating_rounds(args.rounds, {
            OFF: lambda _: time_status_changes(args.runs),
            "on, Alertmanager hanging": lambda _: time_status_changes(args.runs, enable_notifications=True,
                                                                      alertmanager_url=url)})
    finally:
        server.close()
    samples = {mode: [seconds for times in per_round for seconds in times] for mode, per_round in rounds.items()}
    print_medians(samples, floor=OFF, unit="ms", scale=1e3, digits=2, p90=True)


if __name__ == "__main__":
    main()
