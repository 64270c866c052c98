"""Background shipping of points and run events to the metadata API, with the spool as safety net.

The trainer's side (``offer_rows``, ``offer_points``, ``offer_log_line``, ``offer``) only appends to bounded
in-memory structures and never touches the network. Points arrive as rows, one per ``log_metrics`` call
(``(step, wall_time, {key: value})``, `trainmon.common.wire`), and travel as rows: no object per point is made
on the way to the API. They are cut into batches every ``batch_interval`` seconds, or sooner when a batch is
full: ``batch_points`` points, or ``HEALTHY_BATCHES`` times that while the API takes every batch (fewer, larger
requests: each one costs the API, and the training loop a GIL switch or two). Each batch gets a ``batch_id``
(the API stores a replayed batch only once); a daemon thread sends them over one keep-alive connection. A
delivered metric batch is the run's sign of life (the API counts it as a heartbeat); a separate heartbeat goes
out only after ``heartbeat_interval`` seconds without one.

Records are typed (`trainmon.client.records`) and delivered under one policy (`trainmon.client.delivery`).
When a record must be retried (API unreachable, slow, 5xx/408/425/429, or 401/403), it goes to the spool and so
does everything after it, so the order is kept; the thread retries the oldest spooled record with exponential
backoff and full jitter and, once the API answers, replays the spool in order and acknowledges each record.
When the in-memory queue is full (``queue_points``), the caller spills it to the spool (a local disk append,
never a network call, never a wait on the API). When the spool is at its size cap, points are dropped loudly:
a warning and ``dropped_points[reason]`` (exported as ``trainmon_exporter_dropped_points_total{reason}``).

A record the API rejects for good (4xx other than 401/403/408/425/429, or the same 500 again and again) goes
to the run's dead letters beside the spool (``trainmon sync --retry-rejected`` sends them again once the server
is fixed), with one warning per kind of record carrying the server's message, counted per kind (``on_reject``)
and, for metric batches, as ``reason="rejected"``: delivery goes on with the next record.

Offline mode (``client=None``): everything goes to the spool only.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import operator
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from trainmon.common.wire import Point, Row, points_rows

from . import pending_status
from .api_client import ApiClient, ApiError, ApiUnavailable
from .dead_letters import DeadLetters
from .delivery import Backoff, Deliverer, Outcome, Result
from .records import LogBatch, MetricBatch, Record, decode, split_rows
from .spool import MemorySpool, Spool

log = logging.getLogger("trainmon.exporter")
#: records the API takes as a sign of life of the run (a heartbeat is sent only after this long without one)
LIVENESS_OPS = frozenset({"metrics"})
#: while the API takes every batch, a batch holds up to this many times `batch_points` (cut every
#: `batch_interval` otherwise): fewer, larger requests
HEALTHY_BATCHES = 4
_VALUES = operator.itemgetter(2)  # a row's values


class Shipper:
    """Ships records to the API from a daemon thread, spooling what cannot be delivered now."""

    def __init__(self, client: ApiClient | None, spool: Spool | MemorySpool, run_id: str, *, batch_points: int = 5000,
                 batch_interval: float = 1.0, queue_points: int = 100_000, heartbeat_interval: float = 5.0,
                 backoff_initial: float = 0.5, backoff_max: float = 15.0,
                 on_drop: Callable[[str, int], None] | None = None, run_body: dict[str, Any] | None = None,
                 on_reject: Callable[[str], None] | None = None, rank: int = 0,
                 healthy_batch_points: int | None = None):
        if batch_points <= 0 or queue_points < batch_points:
            raise ValueError("need 0 < batch_points <= queue_points")
        self.client = client
        self.spool = spool
        self.run_id = run_id
        self.rank = rank  # the rank whose points this shipper carries (each rank's history is its own series)
        self.batch_points = batch_points
        #: the batch size while the API takes every batch (HEALTHY_BATCHES times batch_points, at most a queue)
        self.healthy_batch_points = min(queue_points, healthy_batch_points or HEALTHY_BATCHES * batch_points)
        self.batch_interval = batch_interval
        self.queue_points = queue_points
        self.heartbeat_interval = heartbeat_interval
        self.backoff = Backoff(backoff_initial, backoff_max)
        self.on_drop = on_drop
        self.on_reject = on_reject
        self.dead_letters = DeadLetters(spool.directory)
        self._deliver_record = Deliverer(client, run_body) if client is not None else None
        self._rejected_kinds: set[str] = set()
        self.run_body = run_body
        self.dropped_points: collections.Counter[str] = collections.Counter()
        self.stats: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._wakeup = threading.Condition(self._lock)
        self._idle = threading.Condition(self._lock)
        self._rows: list[Row] = []  # offered, not cut into batches yet
        self._row_points = 0  # the points those rows hold
        self._points_since = 0.0
        self._lines: list[dict[str, Any]] = []
        self._queue: collections.deque[Record] = collections.deque()
        self._queued_points = 0
        self._busy = False
        self._spooling = not spool.is_empty()  # a spool left over by this process's own resume
        self._retry_at = 0.0
        self._next_heartbeat = 0.0
        self._last_drop_warning = 0.0
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="trainmon-shipper", daemon=True)
        self._thread.start()

    # --- the trainer's side: memory only ---

    def offer_rows(self, rows: Sequence[Row]) -> None:
        """Take rows ``(step, wall_time, {key: value})``, keys normalised and values by the wire contract (the
        drain's row sink); the rows are kept as they are, not copied. Never blocks on the API."""
        if not rows:
            return
        count = sum(map(len, map(_VALUES, rows)))
        with self._lock:
            if not self._rows:
                self._points_since = time.monotonic()
            self._rows.extend(rows)
            self._row_points += count
            if self._row_points >= self._batch_size():
                self._cut_points()
                self._wakeup.notify()
            if self._queued_points + self._row_points > self.queue_points:
                self._spill(points_only=True)

    def offer_points(self, points: Sequence[Point]) -> None:
        """Take ``(key, step, value, wall_time)`` points (a row each); never blocks on the API."""
        if points:
            self.offer_rows(points_rows(points))

    def offer_log_line(self, line: dict[str, Any]) -> None:
        """Take one run log line ``{time, level, message}``; shipped in batches like points."""
        with self._lock:
            self._lines.append(line)
            if len(self._lines) >= 1000:
                self._cut_lines()
                self._wakeup.notify()

    def offer(self, record: Record) -> None:
        """Take one run event record; keeps the order of offers."""
        with self._lock:
            self._cut_points()
            self._cut_lines()
            self._queue.append(record)
            self._wakeup.notify()

    def flush(self, timeout: float = 30.0, deliver: bool = True) -> bool:
        """Wait (at most ``timeout`` s) until everything offered so far is delivered (online) or spooled
        (offline, or ``deliver=False``: delivered *or* safe on disk); True when it was. One immediate retry is
        made if the API was in backoff."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._cut_points()
            self._cut_lines()
            self._retry_at = 0.0
            self._wakeup.notify()
            while not self._drained(deliver):
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(remaining, 0.2))
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Flush (bounded by ``timeout``), stop the thread, spool whatever is left; True when all was delivered."""
        delivered = self.flush(timeout)
        with self._lock:
            self._stopping = True
            self._wakeup.notify()
        self._thread.join(timeout=15.0)  # at most one request in flight (read timeout 10 s)
        with self._lock:
            self._cut_points()
            self._cut_lines()
            self._spill()
        return delivered and self.spool.is_empty()

    def close(self, timeout: float = 30.0) -> bool:
        """`stop`, then close the spool. The spool folder is deleted only when it holds nothing: no undelivered
        record, no dead letter, no final status waiting. True when everything was delivered."""
        delivered = self.stop(timeout)
        left = not self.spool.is_empty()
        if left and isinstance(self.spool, MemorySpool):
            self._drop("spool_error", sum(decode(record).point_count() for _position, record in self.spool.records()))
            log.error("trainmon: %d records of run %s were neither delivered nor spooled (no spool folder could be "
                      "written)", self.spool.count, self.run_id)
        elif left and self.client is None:
            log.info("trainmon: run %s is recorded in %s (upload: trainmon sync %s)", self.run_id,
                     self.spool.directory, self.spool.directory)
        elif left:
            log.warning("trainmon: %d bytes of run %s are waiting in the spool %s; they are sent when the API is "
                        "reachable, or now with: trainmon sync %s", self.spool.size_bytes, self.run_id,
                        self.spool.directory, self.spool.directory)
        self.spool.close()
        kept = left or self.dead_letters.path.exists() or pending_status.load(self.spool.directory) is not None
        if not kept and isinstance(self.spool, Spool):  # everything confirmed: nothing for `trainmon sync`
            shutil.rmtree(self.spool.directory, ignore_errors=True)
        if self.client is not None:
            self.client.close()
        return delivered and not left

    @property
    def pending_points(self) -> int:
        """Points held in memory (not yet sent nor spooled)."""
        return self._queued_points + self._row_points

    # --- helpers under self._lock ---

    def _batch_size(self) -> int:
        """Points a batch holds at most: more while the API takes every batch (fewer requests: each costs the
        API and, with the GIL, the training loop), `batch_points` while spooling, retrying or offline."""
        if self.client is None or self._spooling or self.backoff.active:
            return self.batch_points
        return self.healthy_batch_points

    def _cut_points(self) -> None:
        if self._rows:
            for rows, count in split_rows(self._rows, self._row_points, self._batch_size()):
                self._queue.append(MetricBatch(self.run_id, rows=rows, rank=self.rank, count=count))
                self._queued_points += count
            self._rows, self._row_points = [], 0
        self._points_since = time.monotonic()

    def _cut_lines(self) -> None:
        if self._lines:
            self._queue.append(LogBatch(self.run_id, lines=self._lines))
            self._lines = []

    def _spill(self, points_only: bool = False) -> None:
        """Move the queue to the spool in order: its metric batches only when the queue is full (events stay
        queued, so events keep their order among themselves; metric batches are order-free on the server:
        batch ids and the (key, step) natural key), everything when closing."""
        self._cut_points()
        kept: collections.deque[Record] = collections.deque()
        while self._queue:
            record = self._pop()
            if points_only and record.ordered:
                kept.append(record)
            else:
                self._to_spool(record)
        self._queue = kept
        self._spooling = self._spooling or not self.spool.is_empty()

    def _pop(self) -> Record:
        record = self._queue.popleft()
        if isinstance(record, MetricBatch):
            self._queued_points -= record.point_count()
        return record

    def _drained(self, deliver: bool = True) -> bool:
        if self._queue or self._rows or self._lines or self._busy:
            return False
        return self.client is None or not deliver or not self._spooling

    # --- the shipper thread ---

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._stopping:
                    return
                self._wakeup.wait(self._wait_seconds())
                if self._rows and time.monotonic() - self._points_since >= self.batch_interval:
                    self._cut_points()
                if self._lines:
                    self._cut_lines()
                self._busy = True
            try:
                self._step()
            except Exception:  # noqa: BLE001 - the shipper must never die; the data stays queued or spooled
                log.exception("trainmon: shipper error (retrying)")
                self._schedule_retry()
            finally:
                with self._lock:
                    self._busy = False
                    self._idle.notify_all()

    def _wait_seconds(self) -> float:
        if self._queue and (not self._spooling or self.client is None):
            return 0.0
        now = time.monotonic()
        waits = [self.batch_interval]
        if self.client is not None:
            waits.append(self._next_heartbeat - now)
            if self._spooling:
                waits.append(self._retry_at - now)
        return max(0.0, min(waits))

    def _step(self) -> None:
        if self.client is None or self._spooling:
            with self._lock:
                while self._queue:
                    self._to_spool(self._pop())
                if self.client is not None:
                    self._spooling = True
        if self.client is None:
            return
        if self._spooling and time.monotonic() >= self._retry_at:
            self._replay()
        while not self._spooling and not self._stopping:
            with self._lock:
                if not self._queue:
                    break
                record = self._pop()  # in flight: a spill of the queue cannot take it twice
            if not self._deliver(record):
                with self._lock:
                    self._to_spool(record)
                    self._spooling = True
                break
        self._heartbeat_if_due()

    def _replay(self) -> None:
        """Send spooled records oldest first, acknowledging each; stop at the first retryable failure."""
        for position, data in self.spool.records():
            if self._stopping:
                return
            try:
                record = decode(data)
            except ValueError as error:
                log.warning("trainmon: skipping an unreadable spool record in %s: %s", self.spool.directory, error)
                self.spool.ack(position)
                continue
            if not self._deliver(record):
                return
            self.spool.ack(position)
            self.stats["replayed"] += 1
            self._heartbeat_if_due()
        with self._lock:
            self._spooling = not self.spool.is_empty()
            if not self._spooling:
                log.info("trainmon: metadata API reachable again; spool %s replayed", self.spool.directory)

    def _deliver(self, record: Record) -> bool:
        """Send one record; True when done with it (delivered or rejected for good), False to retry later."""
        assert self._deliver_record is not None
        result = self._deliver_record(record)
        if result.outcome is Outcome.DELIVERED:
            self.backoff.reset()
            self.stats[f"sent_{record.op}"] += 1
            if record.op in LIVENESS_OPS:  # the API counts it as a heartbeat: no separate one is due
                self._next_heartbeat = time.monotonic() + self.heartbeat_interval
            return True
        if result.outcome is Outcome.REJECTED:
            self._reject(record, result)
            return True
        if not self.backoff.active:
            log.warning("trainmon: metadata API unavailable (%s); spooling to %s and retrying", result.error,
                        self.spool.directory)
        self._schedule_retry(result.retry_after)
        return False

    def _reject(self, record: Record, result: Result) -> None:
        """Move a record the API refuses for good to the dead letters; count it; warn once per kind."""
        kept = self.dead_letters.add(record.to_json(), result.status, result.message)
        self.stats["rejected"] += 1
        if self.on_reject is not None:
            with contextlib.suppress(Exception):
                self.on_reject(record.op)
        if isinstance(record, MetricBatch):
            self._drop("rejected", record.point_count())
        if record.op not in self._rejected_kinds:
            self._rejected_kinds.add(record.op)
            log.warning("trainmon: the metadata API refused a %s record of run %s for good: %s. %s; delivery goes "
                        "on with the next record.", record.op, self.run_id, result.message,
                        f"It is kept in {self.dead_letters.path} (after a server fix: trainmon sync "
                        f"--retry-rejected {self.spool.directory})" if kept else "It could not be kept on disk")

    def _schedule_retry(self, at_least: float | None = None) -> None:
        self._retry_at = time.monotonic() + self.backoff.next_delay(at_least)

    def _heartbeat_if_due(self) -> None:
        now = time.monotonic()
        if self.client is None or now < self._next_heartbeat:
            return
        self._next_heartbeat = now + self.heartbeat_interval
        with contextlib.suppress(ApiUnavailable, ApiError):
            self.client.heartbeat(self.run_id, timeout=(1.0, 3.0))
            self.stats["heartbeats"] += 1

    def _to_spool(self, record: Record) -> None:
        try:
            written = self.spool.append(record.to_json())
        except OSError as error:
            log.warning("trainmon: cannot write the spool %s: %s", self.spool.directory, error)
            written = False
            reason = "spool_error"
        else:
            reason = "spool_full"
        if written:
            self.stats["spooled"] += 1
            return
        self._drop(reason, record.point_count())

    def _drop(self, reason: str, points: int) -> None:
        self.dropped_points[reason] += points
        if self.on_drop is not None:
            with contextlib.suppress(Exception):
                self.on_drop(reason, points)
        now = time.monotonic()
        if now - self._last_drop_warning >= 10.0:
            self._last_drop_warning = now
            log.warning("trainmon: DROPPING data (%s): %d points dropped so far for this reason; spool %s holds "
                        "%d of %d bytes", reason, self.dropped_points[reason], self.spool.directory,
                        self.spool.size_bytes, self.spool.max_bytes)
