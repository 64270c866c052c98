"""Exporter health: per-collector duration and success, pushes, buffered and dropped points."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

PUSH_RESULTS = ("success", "failure")
# Every reason a point can be dropped for (training.py: buffer_full, sink_error; shipper.py: spool_full,
# spool_error, rejected). Each series exists at 0 from the start, so increase() and alerts see the first drop.
DROP_REASONS = ("buffer_full", "sink_error", "spool_full", "spool_error", "rejected")


class HasHealth(Protocol):
    name: str
    last_duration_seconds: float
    last_success: bool


class HealthCounters:
    """Pushes by result and dropped points by reason, counted from any thread (and from a signal handler)."""

    def __init__(self, record_kinds: Sequence[str] = ()) -> None:
        self._lock = threading.RLock()  # re-entrant: finish() may run in a signal handler
        self.pushes = dict.fromkeys(PUSH_RESULTS, 0)
        self.dropped = dict.fromkeys(DROP_REASONS, 0)
        self.rejected = dict.fromkeys(record_kinds, 0)

    def count_push(self, result: str) -> None:
        with self._lock:
            self.pushes[result] = self.pushes.get(result, 0) + 1

    def count_dropped(self, reason: str, count: int = 1) -> None:
        """Add `count` dropped points under `reason` (e.g. "buffer_full", "sink_error", "spool_full")."""
        with self._lock:
            self.dropped[reason] = self.dropped.get(reason, 0) + count

    def count_rejected(self, kind: str) -> None:
        """One record of `kind` the metadata API refused for good (kept as a dead letter)."""
        with self._lock:
            self.rejected[kind] = self.rejected.get(kind, 0) + 1

    def snapshot(self) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
        with self._lock:
            return dict(self.pushes), dict(self.dropped), dict(self.rejected)


class HealthCollector:
    """Reports how the exporter itself is doing; register it after the collectors it reports on.

    The training collector is timed at scrape (so it must be collected first in the same scrape); sampled
    collectors (gpu, system, process) report their last background tick.
    """

    def __init__(self, run_labels: Mapping[str, str], counters: HealthCounters, collectors: Sequence[HasHealth] = (),
                 buffered_points: Callable[[], int] = lambda: 0):
        self.run_label_names = list(run_labels)
        self.run_values = [str(value) for value in run_labels.values()]
        self.counters = counters
        self.collectors: list[HasHealth] = list(collectors)
        self._buffered_points = buffered_points

    @property
    def pushes(self) -> dict[str, int]:
        return self.counters.pushes

    @property
    def dropped(self) -> dict[str, int]:
        return self.counters.dropped

    def collect(self) -> Iterable[Metric]:
        names, values = self.run_label_names, self.run_values
        duration = GaugeMetricFamily("trainmon_exporter_collector_duration_seconds",
                                     "Seconds the collector's last scrape (training) or tick (others) took",
                                     labels=[*names, "collector"])
        success = GaugeMetricFamily("trainmon_exporter_collector_success",
                                    "1 when the collector's last scrape or tick succeeded",
                                    labels=[*names, "collector"])
        for collector in self.collectors:
            labels = [*values, collector.name]
            duration.add_metric(labels, collector.last_duration_seconds)
            success.add_metric(labels, 1.0 if collector.last_success else 0.0)
        pushes = CounterMetricFamily("trainmon_exporter_pushes_total", "Pushes to the Pushgateway, by result",
                                     labels=[*names, "result"])
        dropped = CounterMetricFamily("trainmon_exporter_dropped_points_total", "Logged points dropped, by reason",
                                      labels=[*names, "reason"])
        push_counts, drop_counts, reject_counts = self.counters.snapshot()
        for result, count in push_counts.items():
            pushes.add_metric([*values, result], count)
        for reason, count in drop_counts.items():
            dropped.add_metric([*values, reason], count)
        rejected = CounterMetricFamily("trainmon_exporter_rejected_records_total",
                                       "Records the metadata API refused for good (kept as dead letters), by kind",
                                       labels=[*names, "kind"])
        for kind, count in reject_counts.items():
            rejected.add_metric([*values, kind], count)
        buffered = GaugeMetricFamily("trainmon_exporter_buffered_points",
                                     "log_metrics calls waiting in the hot buffer when the last drain began",
                                     labels=names)
        buffered.add_metric(values, self._buffered_points())
        return [duration, success, pushes, dropped, rejected, buffered]
