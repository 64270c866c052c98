"""What every collector shares: background sampling into a cached snapshot, and its own health.

A collector builds metric families in `sample()`. The sampler thread calls `tick()` every
`sample_interval`; a scrape only reads the cached snapshot, so a slow source never slows a scrape.
Duration and success of the last tick are what `exporter/health.py` reports per collector.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric

log = logging.getLogger("trainmon.exporter")


class SampledCollector:
    """Base for collectors whose readings are sampled in the background and served from a cache."""

    #: Short name used in the `collector` label of the health series (e.g. "gpu", "system").
    name: str = "collector"

    def __init__(self, run_labels: Mapping[str, str] | None = None):
        self.run_labels: dict[str, str] = dict(run_labels or {})
        self.last_duration_seconds: float = 0.0
        self.last_success: bool = False
        self._snapshot: list[Metric] = []
        self._failure_logged = False
        self._lock = threading.Lock()

    def sample(self) -> list[Metric]:
        """Read the sources and build the metric families (runs on the sampler thread)."""
        raise NotImplementedError

    def tick(self) -> None:
        """Sample once, keep the result, record duration and success; never raise."""
        started = time.perf_counter()
        try:
            snapshot = self.sample()
        except Exception as error:  # noqa: BLE001 - a failing source must never reach the trainer
            self.last_success = False
            if not self._failure_logged:
                log.warning("trainmon: %s collector failed, keeping its last readings: %s", self.name, error)
                self._failure_logged = True
        else:
            with self._lock:
                self._snapshot = snapshot
            self.last_success = True
            self._failure_logged = False
        self.last_duration_seconds = time.perf_counter() - started

    def collect(self) -> Iterable[Metric]:
        """prometheus_client's collector protocol: the snapshot of the last tick."""
        with self._lock:
            return list(self._snapshot)

    def close(self) -> None:
        """Release the sources (NVML handles, ...). Default: nothing to release."""
