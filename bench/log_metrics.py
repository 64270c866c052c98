"""Hot-path cost: `TrainingMonitor.log_metrics` with 4 float scalars vs 4 raw prometheus_client `Gauge.set`.

Both are timed the same way in the same process, alternating rounds: each sample is the mean of a batch of
calls (so the timer's own cost is amortised); prints p50/p99 per call of each and the ratio of the p50s
(target: <= 0.5). A background drain and a scraper thread run during the monitor's rounds, as in training, so
the monitor's figures include the GIL time they take; the drain's own cost per call is printed last.

    .venv/bin/python bench/log_metrics.py [--rounds 40] [--batch 2000]
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time

import requests
from _common import alternating_rounds, quantile
from prometheus_client import CollectorRegistry, Gauge
from trainmon.exporter import TrainingMonitor

METRICS = {"loss": 0.25, "accuracy": 0.91, "lr": 3e-4, "grad_norm": 1.7}


def per_call_ns(call, batch: int) -> float:
    started = time.perf_counter_ns()
    for _ in range(batch):
        call()
    return (time.perf_counter_ns() - started) / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--batch", type=int, default=2000)
    args = parser.parse_args()

    registry = CollectorRegistry()
    gauges = [Gauge(f"bench_gauge_{name}", "bench", registry=registry) for name in METRICS]
    g0, g1, g2, g3 = gauges

    def four_sets_unrolled() -> None:
        g0.set(0.25)
        g1.set(0.91)
        g2.set(3e-4)
        g3.set(1.7)

    # the exporter alone (no metadata API: without this, a monitor with no API URL records the run locally)
    monitor = TrainingMonitor("bench", port=0, gpu=False, system=False, sample_interval=1.0, handle_signals=False,
                              mode="disabled")
    stop = threading.Event()

    def scraper() -> None:  # one scrape per second, like Prometheus
        while not stop.wait(1.0):
            requests.get(monitor.metrics_url, timeout=5)

    threading.Thread(target=scraper, daemon=True).start()
    metrics = dict(METRICS)
    log = monitor.log_metrics

    def one_step() -> None:
        log(metrics)

    def monitor_round(_: int) -> float:
        per_call = per_call_ns(one_step, args.batch)
        monitor.flush()  # untimed: a real step takes milliseconds, so the drain keeps up; here calls come ~2M/s
        return per_call

    per_call = alternating_rounds(args.rounds, {"gauge": lambda _: per_call_ns(four_sets_unrolled, args.batch),
                                                "monitor": monitor_round})
    gauge_ns, monitor_ns = per_call["gauge"], per_call["monitor"]
    step = args.rounds * args.batch
    loop_ns = [per_call_ns(lambda: None, args.batch) for _ in range(args.rounds)]
    stop.set()
    monitor.flush()
    aggregated = monitor.training.steps_total
    monitor.sampler.stop()  # now time the drain alone: the deferred per-key work, off the training thread
    drain_ns = []
    for _ in range(5):
        for _ in range(args.batch * 5):
            log(metrics)
        started = time.perf_counter_ns()
        monitor.flush()
        drain_ns.append((time.perf_counter_ns() - started) / (args.batch * 5))
    monitor.finish()
    g50, g99 = quantile(gauge_ns, 0.5), quantile(gauge_ns, 0.99)
    m50, m99 = quantile(monitor_ns, 0.5), quantile(monitor_ns, 0.99)
    print(f"4x Gauge.set          p50 {g50 / 1000:.3f} us  p99 {g99 / 1000:.3f} us")
    print(f"log_metrics(4 floats) p50 {m50 / 1000:.3f} us  p99 {m99 / 1000:.3f} us")
    print(f"empty call (both include it) p50 {statistics.median(loop_ns) / 1000:.3f} us")
    print(f"ratio p50 {m50 / g50:.3f} (target <= 0.5)  p99 {m99 / g99:.3f}")
    print(f"drain (background thread / scrape) per log_metrics call: p50 {statistics.median(drain_ns) / 1000:.3f} us")
    print(f"steps logged {step}, steps aggregated {aggregated}, "
          f"dropped {sum(monitor.health.dropped.values())}")


if __name__ == "__main__":
    main()
