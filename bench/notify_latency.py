"""Does a hanging Alertmanager slow the metadata API's status changes? (lifecycle notifications)

Times `POST /api/runs/{id}/status` (RUNNING -> FAILED) through the real app (TestClient, SQLite file) with
notifications off (the floor) and on, pointed at an Alertmanager that accepts connections and never answers.
Prints medians and p90 of both and the ratio on/off; close to 1.0 means posting stays off the request path.

    .venv/bin/python bench/notify_latency.py [--runs 100] [--rounds 3]
"""

from __future__ import annotations

import argparse
import logging
import socket
import statistics
import tempfile
import time
from pathlib import Path

from fastapi.testclient import TestClient
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings


def hanging_alertmanager() -> tuple[socket.socket, str]:
    """A listening socket nobody accepts from: connections open, requests never get an answer."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1024)
    return server, f"http://127.0.0.1:{server.getsockname()[1]}"


def time_status_changes(folder: Path, runs: int, **settings: object) -> list[float]:
    app = create_app(Settings(_env_file=None, database_url=f"sqlite:///{folder / 'bench.db'}", artifact_root=folder,
                              crash_check_interval_seconds=3600, retention_interval_seconds=3600, **settings))
    seconds = []
    with TestClient(app) as api:
        ids = [api.post("/api/runs", json={"experiment": "bench"}).json()["run_id"] for _ in range(runs)]
        for run_id in ids:
            started = time.perf_counter()
            response = api.post(f"/api/runs/{run_id}/status", json={"status": "FAILED"})
            seconds.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
    return seconds


def describe(name: str, seconds: list[float]) -> float:
    median = statistics.median(seconds)
    p90 = statistics.quantiles(seconds, n=10)[-1]
    print(f"{name:<34} median {median * 1e3:7.2f} ms   p90 {p90 * 1e3:7.2f} ms   (n={len(seconds)})")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100, help="status changes per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    logging.getLogger("trainmon.metadata_api.notifications").setLevel(logging.ERROR)  # 1 warning per timeout
    server, url = hanging_alertmanager()
    off_times: list[float] = []
    on_times: list[float] = []
    try:
        for _ in range(args.rounds):  # alternating rounds, so load from elsewhere hits both alike
            with tempfile.TemporaryDirectory() as folder:
                off_times += time_status_changes(Path(folder), args.runs)
            with tempfile.TemporaryDirectory() as folder:
                on_times += time_status_changes(Path(folder), args.runs, enable_notifications=True,
                                                alertmanager_url=url)
    finally:
        server.close()
    off = describe("notifications off (floor)", off_times)
    on = describe("on, Alertmanager hanging", on_times)
    print(f"ratio on/off (median): {on / off:.2f}")


if __name__ == "__main__":
    main()
