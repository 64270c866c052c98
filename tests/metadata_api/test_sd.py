"""HTTP service discovery end to end: a real Prometheus with `http_sd_configs` pointing at a live uvicorn of the
API discovers the exporter a run registered (every rank's, for a DDP run), scrapes it, and drops it when the run
ends."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from support.procs import ManagedProcess, free_port, http_ok, prometheus_config, run_prometheus, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def live_api(tmp_path: Path) -> Iterator[str]:
    """`python -m trainmon.metadata_api` on a free loopback port over a temp SQLite file."""
    port = free_port()
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}", "LOG_LEVEL": "WARNING",
           "PYTHONUNBUFFERED": "1"}
    process = ManagedProcess([sys.executable, "-m", "trainmon.metadata_api", "--port", str(port)],
                             tmp_path / "api.log", env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(http_ok(f"{url}/readyz"), what="metadata API ready")
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture
def start_exporter() -> Iterator[Callable[[float], str]]:
    """`start_exporter(value)`: a small real /metrics server (prometheus_client) standing in for a trainer's
    exporter, its `trainmon_sd_probe` gauge set to `value`; its URL. All are stopped at teardown."""
    servers = []

    def start(value: float) -> str:
        registry = CollectorRegistry()
        Gauge("trainmon_sd_probe", "Set by the test; proves the discovered target was scraped.",
              registry=registry).set(value)
        port = free_port()
        servers.append(start_http_server(port, addr="127.0.0.1", registry=registry))
        return f"http://127.0.0.1:{port}/metrics"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)


@pytest.fixture
def exporter(start_exporter: Callable[[float], str]) -> str:
    return start_exporter(42)


def sd_job(api_url: str) -> str:
    return (f"  - job_name: 'trainmon-runs'\n    honor_labels: true\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
            f"    http_sd_configs:\n      - url: '{api_url}/api/sd'\n        refresh_interval: 1s\n")


def test_prometheus_discovers_scrapes_and_forgets_a_registered_exporter(live_api: str, exporter: str) -> None:
    run = {"experiment": "sd-demo", "project": "vision", "run_id": "sd-run-1", "rank": 0, "exporter_url": exporter}
    assert requests.post(f"{live_api}/api/runs", json=run, timeout=10).status_code == 201
    with run_prometheus(prometheus_config(sd_job(live_api))) as prometheus:
        result = prometheus.wait_for('trainmon_sd_probe{job="trainmon-runs"}', timeout=60)
        labels = result[0]["metric"]
        assert result[0]["value"][1] == "42"
        assert {k: labels[k] for k in ("run_id", "experiment", "project", "rank")} == {
            "run_id": "sd-run-1", "experiment": "sd-demo", "project": "vision", "rank": "0"}
        assert requests.post(f"{live_api}/api/runs/sd-run-1/status", json={"status": "COMPLETED"},
                             timeout=10).status_code == 200
        wait_until(lambda: not [t for t in prometheus.targets() if t["labels"].get("run_id") == "sd-run-1"],
                   timeout=60, what="the finished run's target to disappear")


def test_prometheus_discovers_and_scrapes_every_rank_of_a_ddp_run(live_api: str,
                                                                  start_exporter: Callable[[float], str]) -> None:
    """Two ranks of one run, each with its own real /metrics server, both register: both are scraped."""
    for rank in (0, 1):
        run = {"experiment": "ddp-demo", "project": "vision", "run_id": "ddp-run", "rank": rank, "world_size": 2,
               "exporter_url": start_exporter(100 + rank)}
        assert requests.post(f"{live_api}/api/runs", json=run, timeout=10).status_code == (201, 200)[rank]
    with run_prometheus(prometheus_config(sd_job(live_api))) as prometheus:
        result = prometheus.wait_for('trainmon_sd_probe{job="trainmon-runs", run_id="ddp-run"}', timeout=60,
                                     predicate=lambda series: len(series) == 2)
        scraped = {(s["metric"]["rank"], s["metric"]["experiment"], s["metric"]["project"], s["value"][1])
                   for s in result}
        assert scraped == {("0", "ddp-demo", "vision", "100"), ("1", "ddp-demo", "vision", "101")}
        up = prometheus.query('up{job="trainmon-runs", run_id="ddp-run"}')
        assert sorted((s["metric"]["rank"], s["value"][1]) for s in up) == [("0", "1"), ("1", "1")]
