"""Pushgateway mode: push on an interval and at finish, never blocking or crashing the trainer."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, delete_from_gateway, push_to_gateway

log = logging.getLogger("trainmon.exporter")

DEFAULT_TIMEOUT = 2.0


class Pusher:
    """Pushes `registry` to a Pushgateway group (job + grouping key) from a background thread.

    Each interval: up to `retries` attempts with exponential backoff from `backoff` seconds, each bounded by
    `timeout`; results counted through `count_push("success"|"failure")`; one warning per outage. `finish()`
    stops the thread and makes one last push (or deletes the group), each a single bounded attempt.
    """

    def __init__(self, url: str, registry: CollectorRegistry, job: str, grouping_key: Mapping[str, str],
                 interval: float, count_push: Callable[[str], None], *, timeout: float = DEFAULT_TIMEOUT,
                 retries: int = 3, backoff: float = 0.5):
        if not interval > 0:
            raise ValueError(f"push_interval must be > 0 seconds, got {interval!r}")
        self.url = url
        self.registry = registry
        self.job = job
        self.grouping_key = dict(grouping_key)
        self.interval = float(interval)
        self.timeout = float(timeout)
        self.retries = max(1, int(retries))
        self.backoff = float(backoff)
        self._count_push = count_push
        self._failing = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trainmon-pusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def push_once(self) -> bool:
        """One bounded push; True on success."""
        try:
            push_to_gateway(self.url, job=self.job, registry=self.registry, grouping_key=self.grouping_key,
                            timeout=self.timeout)
        except Exception as error:  # noqa: BLE001 - the trainer must never see a push failure
            self._count_push("failure")
            if not self._failing:
                log.warning("trainmon: push to Pushgateway %s failed (retrying every %gs, "
                            "counted in trainmon_exporter_pushes_total{result=\"failure\"}): %s",
                            self.url, self.interval, error)
            self._failing = True
            return False
        self._count_push("success")
        if self._failing:
            log.info("trainmon: pushes to %s succeed again", self.url)
        self._failing = False
        return True

    def push_with_retries(self) -> bool:
        for attempt in range(self.retries):
            if self.push_once():
                return True
            if attempt + 1 < self.retries and self._stop.wait(self.backoff * 2**attempt):
                return False
        return False

    def delete_group(self) -> bool:
        try:
            delete_from_gateway(self.url, job=self.job, grouping_key=self.grouping_key, timeout=self.timeout)
        except Exception as error:  # noqa: BLE001
            log.warning("trainmon: deleting the Pushgateway group at %s failed: %s", self.url, error)
            return False
        return True

    def finish(self, delete: bool) -> None:
        """Stop pushing; delete the group (`delete`) or push the final state once. Bounded by ~2x timeout."""
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(self.timeout + 0.5)
        if delete:
            self.delete_group()
        else:
            self.push_once()

    def _run(self) -> None:
        self.push_with_retries()
        while not self._stop.wait(self.interval):
            self.push_with_retries()
