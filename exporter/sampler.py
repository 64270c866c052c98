"""The background thread: drains the training buffer often and ticks sampled collectors every interval."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

log = logging.getLogger("trainmon.exporter")

DRAIN_INTERVAL = 0.25


class Tickable(Protocol):
    name: str

    def tick(self) -> None: ...


class Sampler:
    """Calls `drain()` every `drain_interval` and each collector's `tick()` every `sample_interval`.

    Collectors tick once right at start so the first scrape has readings. `stop()` is prompt (an Event wakes
    the thread) and bounded (join with a timeout).
    """

    def __init__(self, collectors: Sequence[Tickable], sample_interval: float, drain: Callable[[], object],
                 drain_interval: float = DRAIN_INTERVAL):
        if not sample_interval > 0:
            raise ValueError(f"sample_interval must be > 0 seconds, got {sample_interval!r}")
        self.collectors = list(collectors)
        self.sample_interval = float(sample_interval)
        self.drain_interval = min(float(drain_interval), self.sample_interval)
        self._drain = drain
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainmon-sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def tick_collectors(self) -> None:
        for collector in self.collectors:
            collector.tick()  # SampledCollector.tick never raises

    def _run(self) -> None:
        next_sample = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= next_sample:
                self.tick_collectors()
                next_sample = max(next_sample + self.sample_interval, time.monotonic())
            try:
                self._drain()
            except Exception as error:  # noqa: BLE001 - keep sampling whatever happens
                log.warning("trainmon: draining the training buffer failed: %s", error)
            self._stop.wait(min(self.drain_interval, max(0.0, next_sample - time.monotonic())))
