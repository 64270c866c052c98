"""A RUNNING run's page updates itself from the server's event stream: points a real `TrainingMonitor` logs appear
in the charts (a point that reaches the API is drawn within 2 s), a key logged for the first time gets its chart,
log lines are followed, and the status and end time change when the run finishes."""

from __future__ import annotations

import time

import requests
from web_support import PROJECT, Dashboard, chart_data, wait_for


def stored_steps(dashboard: Dashboard, run_id: str, key: str) -> int:
    answer = requests.get(f"{dashboard.url}/api/runs/{run_id}/metrics/{key}",
                          params={"project": PROJECT, "max_points": 1000}, timeout=10)
    return len(answer.json()["points"]) if answer.status_code == 200 else 0


def test_a_running_run_updates_live(dashboard: Dashboard, page, console_errors: list[str]) -> None:  # noqa: ANN001
    monitor = dashboard.monitor("live", "live-run")
    try:
        for step in range(20):
            monitor.log_metrics({"train/loss": 1.0 / (step + 1)}, step=step)
        wait_for(lambda: stored_steps(dashboard, "live-run", "train_loss") == 20, what="the first points stored")
        page.goto(f"{dashboard.url}/runs/live-run?project={PROJECT}")
        assert len(chart_data(page, "train_loss")["series"][0]["steps"]) == 20
        page.wait_for_function("() => window.__trainmon.eventSource.readyState === 1")  # the stream is open

        for step in range(20, 25):  # logged by the trainer: shipped within its batch interval, then pushed
            monitor.log_metrics({"train/loss": 1.0 / (step + 1), "val/acc": step / 100}, step=step)
        monitor.log_text("epoch 1 done", level="WARNING")
        page.wait_for_function("() => window.__trainmon.charts.train_loss.series[0].steps.length === 25",
                               timeout=10_000)
        page.wait_for_selector('figure.chart[data-key="val_acc"]', timeout=10_000)  # a new key gets its chart
        page.wait_for_selector("#log-lines li:has-text('epoch 1 done')", timeout=10_000)

        # From the API's acceptance to the browser: within 2 s.
        accepted = time.monotonic()
        requests.post(f"{dashboard.url}/api/runs/live-run/metrics", params={"project": PROJECT}, timeout=10,
                      json={"batch_id": "direct", "points": [{"key": "train_loss", "step": 1000, "value": 0.5}]},
                      ).raise_for_status()
        page.wait_for_function("() => window.__trainmon.charts.train_loss.series[0].steps.includes(1000)",
                               timeout=2_000)
        assert time.monotonic() - accepted < 2.5  # (the browser's own 2 s deadline held, plus this process' wait)
    finally:
        monitor.finish("COMPLETED")
    page.wait_for_selector("#run-status .status-completed", timeout=10_000)
    assert page.locator("#run-end time").count() == 1
    page.wait_for_function("() => window.__trainmon.eventSource.readyState === 2")  # closed: nothing more to come
    assert console_errors == []
