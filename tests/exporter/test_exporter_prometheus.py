"""A real Prometheus scrapes a real exporter: PromQL sees the series, every spike and exact window means.

The trainer logs >= 1,000 steps/s for ~5 s with one injected loss spike while TWO Prometheus servers scrape the
same target every second; each must see the spike through `trainmon_metric_window_max` and compute the exact
mean of everything logged as `increase(_sum) / increase(_count)`. `promtool check metrics` passes on the real
exposition output (training, health, system and process series, GPU from the replayed H200 fixture when present).
"""

from __future__ import annotations

import math
import random
import subprocess
import time

import pytest
import requests
from support.exporter import full_monitor
from support.procs import prometheus_config, require_binary, run_prometheus, scrape_config, wait_until
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration

STEPS_PER_TICK = 25  # every 10 ms: 2,500 steps/s
RUN_SECONDS = 5.0
SPIKE = 1234.5


def single_value(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def train(monitor: TrainingMonitor, seconds: float) -> tuple[list[float], int]:
    """Log a noisy decaying loss at ~2,500 steps/s with one spike mid-run; return the losses and steps logged."""
    rng = random.Random(7)
    losses: list[float] = []
    started = time.monotonic()
    step = 0
    spike_step: int | None = None
    while time.monotonic() - started < seconds:
        for _ in range(STEPS_PER_TICK):
            loss = 2.0 * math.exp(-step / 5000) + rng.gauss(0, 0.05)
            if spike_step is None and time.monotonic() - started > seconds / 2:
                spike_step, loss = step, SPIKE
            losses.append(loss)
            monitor.log_metrics({"loss": loss, "train/acc": 1 - loss / 4, "lr": 1e-3}, step)
            step += 1
        time.sleep(0.01)
    assert spike_step is not None
    return losses, step


def test_two_prometheus_servers_see_the_spike_and_the_exact_mean() -> None:
    with TrainingMonitor("spiky", "proj", port=0, gpu=False, system=False, handle_signals=False) as monitor:
        target = f"127.0.0.1:{monitor.port}"
        config = prometheus_config(scrape_config("trainer", [target], interval="1s"))
        with run_prometheus(config) as first, run_prometheus(config) as second:
            servers = (first, second)
            # The loss series starts at count 0 (a NaN is counted, not summed), so increase() extrapolates sum
            # and count alike and their ratio is exact.
            monitor.log_metrics({"loss": math.nan}, 0)
            for prometheus in servers:
                prometheus.wait_for('trainmon_metric_count{key="loss"} == 0', timeout=30)
            run_started = time.time()
            losses, steps = train(monitor, RUN_SECONDS)
            rate = steps / (time.time() - run_started)
            assert rate >= 1000, f"the trainer logged only {rate:.0f} steps/s"
            for prometheus in servers:
                prometheus.wait_for(f'trainmon_metric_count{{key="loss"}} == {len(losses)}', timeout=30)
            exact_mean = math.fsum(losses) / len(losses)
            window = f"{int(time.time() - run_started) + 30}s"
            for prometheus in servers:
                spike = prometheus.query(f'max_over_time(trainmon_metric_window_max{{key="loss"}}[{window}])')
                assert single_value(spike) == SPIKE
                mean = single_value(prometheus.query(
                    f'increase(trainmon_metric_sum{{key="loss"}}[{window}])'
                    f' / increase(trainmon_metric_count{{key="loss"}}[{window}])'))
                assert mean == pytest.approx(exact_mean, rel=1e-9)
                assert single_value(prometheus.query('trainmon_metric_nonfinite_total{key="loss"}')) == 1
                assert single_value(prometheus.query("trainmon_steps_total")) == steps
                assert single_value(prometheus.query("trainmon_step")) == steps - 1
                info = prometheus.query("trainmon_run_info")
                assert len(info) == 1
                labels = info[0]["metric"]
                assert (labels["experiment"], labels["run_id"], labels["project"], labels["rank"]) == \
                    ("spiky", monitor.run_id, "proj", "0")
                acc = prometheus.query('trainmon_metric_value{key="train_acc"}')
                assert single_value(acc) == pytest.approx(1 - losses[-1] / 4)
                assert single_value(prometheus.query(f"rate(trainmon_steps_total[{window}])")) > 0
                assert single_value(prometheus.query(
                    'trainmon_exporter_collector_success{collector="training"}')) == 1


def test_promtool_accepts_the_real_exposition() -> None:
    promtool = require_binary("promtool")
    needed = ["trainmon_metric_window_max", "trainmon_process_threads", "trainmon_host_cpu_utilization_ratio"]
    with full_monitor("lint") as monitor:
        if monitor.config.gpu:
            needed += ["trainmon_gpu_info", "trainmon_gpu_sm_active_ratio"]  # GPM needs two ticks
        box: list[str] = []

        def complete() -> bool:
            box[:] = [requests.get(monitor.metrics_url, timeout=5).text]
            return all(f"\n{name}{{" in box[0] for name in needed)

        wait_until(complete, timeout=20, interval=0.2, what=f"series {needed}")
    result = subprocess.run([promtool, "check", "metrics"], input=box[0], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
