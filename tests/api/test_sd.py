"""HTTP service discovery end to end: a real Prometheus with `http_sd_configs` pointing at a live uvicorn of the
API discovers the exporter a run registered, scrapes it, and drops it when the run ends."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
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
def exporter() -> Iterator[str]:
    """A small real /metrics server (prometheus_client) standing in for a trainer's exporter."""
    registry = CollectorRegistry()
    Gauge("trainmon_sd_probe", "Set by the test; proves the discovered target was scraped.",
          registry=registry).set(42)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        yield f"http://127.0.0.1:{port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


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
