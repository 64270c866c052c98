"""Telemetry: the API's own Prometheus metrics (served on `/metrics`), in a registry per app (DEVELOPERS.md,
"API metrics"). Not to be confused with the metric points trainers send (`routes.points`, `repositories.points`).

Run status changes are counted by `services.lifecycle` alone (`count_status_changes`), when they commit.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from .models import RunStatus
from .repositories.runs import count_by_status

log = logging.getLogger("trainmon.metadata_api.telemetry")
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    """Counters and histograms the app updates, plus the run-status gauge read from the database at scrape."""

    def __init__(self, session_factory: Callable[[], Session]):
        self.registry = CollectorRegistry(auto_describe=True)
        self.request_duration = Histogram(
            "trainmon_api_request_duration_seconds", "API request latency by route template and status.",
            ["method", "route", "status"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.points_ingested = Counter("trainmon_api_points_ingested", "Metric points stored (replays excluded).",
                                       registry=self.registry)
        self.db_errors = Counter("trainmon_api_db_errors", "Database errors met while serving.",
                                 registry=self.registry)
        self.status_changes = Counter("trainmon_api_run_status_changes", "Run status changes by new status.",
                                      ["status"], registry=self.registry)
        for status in RunStatus:
            self.status_changes.labels(status.value)
        self.registry.register(_RunsByStatus(session_factory, self.db_errors))
        self._request_series: dict[tuple[str, str, int], Any] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """One request's latency in `request_duration`; each label set's series is looked up once (labels()
        takes a lock and builds a key every call)."""
        key = (method, route, status)
        series = self._request_series.get(key)
        if series is None:
            series = self._request_series[key] = self.request_duration.labels(method, route, str(status))
        series.observe(seconds)


class _RunsByStatus(Collector):
    def __init__(self, session_factory: Callable[[], Session], db_errors: Counter):
        self._session_factory = session_factory
        self._db_errors = db_errors

    def describe(self) -> list[GaugeMetricFamily]:
        return [GaugeMetricFamily("trainmon_api_runs", "Runs by status.", labels=["status"])]

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily("trainmon_api_runs", "Runs by status.", labels=["status"])
        try:
            with self._session_factory() as session:
                counts = count_by_status(session)
        except SQLAlchemyError as error:
            self._db_errors.inc()
            log.warning("could not count runs for /metrics: %s", error)
            return
        for status in RunStatus:
            family.add_metric([status.value], counts.get(status.value, 0))
        yield family
