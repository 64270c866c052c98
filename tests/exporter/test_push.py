"""Pushgateway mode against a real Pushgateway, scraped by a real Prometheus with honor_labels."""

from __future__ import annotations

import logging
import socket
from urllib.parse import urlparse

import pytest
import requests
from support.procs import prometheus_config, run_prometheus, scrape_config, wait_until
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def groups(pushgateway_url: str) -> list[dict[str, str]]:
    """Grouping labels of every group the Pushgateway holds."""
    data = requests.get(f"{pushgateway_url}/api/v1/metrics", timeout=5).json()["data"]
    return [group["labels"] for group in data]


def test_pushes_reach_prometheus_with_honor_labels_and_the_group_goes_at_finish(pushgateway_url: str) -> None:
    target = urlparse(pushgateway_url).netloc
    config = prometheus_config(scrape_config("pushgateway", [target], interval="1s", honor_labels=True))
    with run_prometheus(config) as prometheus:
        monitor = TrainingMonitor("pushed", "proj", port=False, pushgateway_url=pushgateway_url, push_interval=0.5,
                                  gpu=False, system=False, handle_signals=False)
        run = monitor.run_id
        for step in range(20):
            monitor.log_metrics({"loss": 0.5, "val/acc": 0.75}, step)
        result = prometheus.wait_for(f'trainmon_metric_value{{key="val_acc",run_id="{run}"}}', timeout=30)
        labels = result[0]["metric"]
        assert labels["job"] == "trainmon" and labels["rank"] == "0" and labels["experiment"] == "pushed"
        assert "instance" not in labels  # honor_labels: the pushed (empty) instance wins over the target's
        assert float(result[0]["value"][1]) == 0.75
        prometheus.wait_for(f'trainmon_exporter_pushes_total{{result="success",run_id="{run}"}} > 0', timeout=30)
        assert {"job": "trainmon", "run_id": run, "rank": "0"}.items() <= groups(pushgateway_url)[0].items()
        monitor.finish()  # (a failed assertion above leaves a daemon pusher that only logs warnings)
        assert not [group for group in groups(pushgateway_url) if group.get("run_id") == run]
        prometheus.wait_for(f'trainmon_metric_value{{run_id="{run}"}}', timeout=30,
                            predicate=lambda result: result == [])


def test_group_is_kept_when_asked_and_after_a_failed_run(pushgateway_url: str) -> None:
    with TrainingMonitor("kept", port=False, pushgateway_url=pushgateway_url, keep_push_group=True,
                         gpu=False, system=False, handle_signals=False) as kept:
        kept.log_metrics({"loss": 2.0}, 1)
    with pytest.raises(RuntimeError), TrainingMonitor("failed", port=False, pushgateway_url=pushgateway_url,
                                                      gpu=False, system=False, handle_signals=False) as failed:
        failed.log_metrics({"loss": 3.0}, 1)
        raise RuntimeError("diverged")
    remaining = {group.get("run_id") for group in groups(pushgateway_url)}
    assert {kept.run_id, failed.run_id} <= remaining
    text = requests.get(f"{pushgateway_url}/metrics", timeout=5).text
    assert f'trainmon_metric_value{{experiment="kept",instance="",job="trainmon",key="loss",rank="0",' \
           f'run_id="{kept.run_id}"}} 2' in text


@pytest.mark.timeout(60)  # the bound: a hung push must never hold finish() longer than ~2x the push timeout
def test_a_dead_or_hanging_pushgateway_never_blocks_training(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as hanging:  # accepts TCP connections, never answers
        hanging.bind(("127.0.0.1", 0))
        hanging.listen(64)
        hanging_url = f"http://127.0.0.1:{hanging.getsockname()[1]}"
        with socket.socket() as closed:
            closed.bind(("127.0.0.1", 0))
            dead_url = f"http://127.0.0.1:{closed.getsockname()[1]}"  # bound, not listening: refused
        for url in (dead_url, hanging_url):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
                monitor = TrainingMonitor("offline", port=False, pushgateway_url=url, push_interval=0.2,
                                          gpu=False, system=False, handle_signals=False)
                monitor.pusher.timeout = 0.5
                health = monitor.health
                try:
                    wait_until(lambda health=health: health.pushes["failure"] >= 2, timeout=30, what="failed pushes")
                    for step in range(10_000):
                        monitor.log_metrics({"loss": 1.0}, step)
                finally:
                    monitor.finish()
            assert monitor.status == "COMPLETED"
            assert monitor.training.steps_total == 10_000
            warnings = [r for r in caplog.records if f"push to Pushgateway {url}" in r.getMessage()]
            assert len(warnings) == 1, [r.getMessage() for r in caplog.records]
            assert monitor.health.pushes["success"] == 0
