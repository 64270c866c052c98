"""Training series: the hot-path buffer, the drain that aggregates it, and the scrape-time collector.

`TrainingMonitor.log_metrics` only appends ``(metrics_copy, step, wall_time, seq, samples, tokens)`` to a bounded
deque (no lock, no per-key work). `drain()` runs at every scrape and on the sampler's short tick: it normalises
names, coerces values, updates per-key aggregates (last value, finite sum/count, non-finite counts, per-second
min/max buckets over the trailing `extrema_window`) and hands ``(key, step, value, wall_time)`` points to an
optional sink (the seam for the metadata API). Sequence numbers reveal points the full buffer dropped.
"""

from __future__ import annotations

import itertools
import logging
import math
import operator
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily
from trainmon.common.naming import normalize_key

from .values import coerce_value

log = logging.getLogger("trainmon.exporter")

#: One point handed to a sink: (normalised key, step, value, unix wall time).
Point = tuple[str, int, float, float]
#: Receives the points of one drain, in logging order; must be quick (e.g. append to its own queue).
PointSink = Callable[[list[Point]], None]
#: Reports dropped points by reason (wired to the health collector).
DropCounter = Callable[[str, int], None]

REJECT_REASONS = ("invalid_name", "non_numeric")
DEFAULT_BUFFER_SIZE = 50_000  # log_metrics calls; drained every 0.25 s, so 50 s of backlog at 1,000 steps/s


class _KeyStats:
    """Aggregates of one normalised key; label lists are built once."""

    __slots__ = ("key", "labels", "last", "sum", "count", "nonfinite", "secs", "maxs", "mins", "exported",
                 "is_epoch")

    def __init__(self, key: str, run_values: Sequence[str], ring_size: int):
        self.key = key
        self.labels = [*run_values, key]
        self.exported = False  # becomes True with the first accepted value
        self.is_epoch = key == "epoch"
        self.last = math.nan
        self.sum = 0.0
        self.count = 0
        self.nonfinite = 0
        self.secs = [-1] * ring_size
        self.maxs = [0.0] * ring_size
        self.mins = [0.0] * ring_size

    def window_extrema(self, oldest_sec: int) -> tuple[float, float] | None:
        """(max, min) over the buckets at or after `oldest_sec`, None when none is."""
        high = low = None
        for sec, top, bottom in zip(self.secs, self.maxs, self.mins, strict=True):
            if sec >= oldest_sec:
                high = top if high is None or top > high else high
                low = bottom if low is None or bottom < low else low
        return None if high is None else (high, low)


class TrainingCollector:
    """Aggregates what the trainer logged and serves it at scrape time (prometheus_client collector)."""

    name = "training"

    def __init__(self, run_labels: Mapping[str, str], info_labels: Mapping[str, str], *,
                 extrema_window: float = 60.0, batch_size: int | None = None,
                 buffer_size: int = DEFAULT_BUFFER_SIZE, count_dropped: DropCounter | None = None):
        if not extrema_window >= 1:
            raise ValueError(f"extrema_window must be >= 1 second, got {extrema_window!r}")
        if batch_size is not None and (not isinstance(batch_size, int) or batch_size <= 0):
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        self.run_label_names = list(run_labels)
        self.run_values = [str(value) for value in run_labels.values()]
        self.info_labels = dict(info_labels)
        self.window_seconds = int(math.ceil(extrema_window))
        self.batch_size = batch_size
        self.buffer: deque[tuple] = deque(maxlen=buffer_size)
        self.sequence = itertools.count(1)
        self.sink: PointSink | None = None
        self._count_dropped = count_dropped or (lambda reason, n: None)
        self._lock = threading.RLock()  # re-entrant: a signal handler may finish the run during a drain
        self._expected_seq = 1
        self._by_key: dict[str, _KeyStats] = {}  # every normalised key seen
        self._stats: dict[str, _KeyStats] = {}  # the keys exported: those with an accepted value
        self._by_raw: dict[object, _KeyStats] = {}
        self._rejected_names: set[object] = set()
        self._warned: set[tuple[str, object]] = set()
        self.rejected = dict.fromkeys(REJECT_REASONS, 0)
        self.step: int | None = None
        self.epoch: float | None = None
        self.steps_total = 0
        self.step_backwards_total = 0
        self.step_duration_sum = 0.0
        self.step_duration_count = 0
        self._last_step_wall: float | None = None
        self.samples_total = 0.0
        self.tokens_total = 0.0
        self._samples_seen = batch_size is not None
        self._tokens_seen = False
        self.last_log_wall: float | None = None
        self.checkpoints_total = 0
        self.last_checkpoint_wall: float | None = None
        self.last_buffered = 0
        self.last_duration_seconds = 0.0
        self.last_success = True

    # --- hot-path helpers and checkpoints ---

    def record_checkpoint(self, wall_time: float | None = None) -> None:
        with self._lock:
            self.checkpoints_total += 1
            self.last_checkpoint_wall = time.time() if wall_time is None else wall_time

    # --- drain ---

    def drain(self) -> int:
        """Aggregate every buffered point; return how many log calls were taken."""
        with self._lock:
            return self._drain_locked()

    def _drain_locked(self) -> int:
        buffer = self.buffer
        taken = len(buffer)
        self.last_buffered = taken
        if not taken:
            return 0
        popleft = buffer.popleft
        points: list[Point] | None = [] if self.sink is not None else None
        for _ in range(taken):
            try:
                metrics, step, wall, seq, samples, tokens = popleft()
            except IndexError:  # a re-entrant drain (e.g. finish() from a SIGTERM handler) took the rest
                break
            if seq != self._expected_seq:
                self._count_dropped("buffer_full", seq - self._expected_seq)
            self._expected_seq = seq + 1
            try:
                if type(metrics) is not dict:  # something with .copy() that is not a dict copy
                    metrics = dict(metrics.items())
                step = self._advance_step(step, wall, samples, tokens)
                self._aggregate(metrics, step, wall, points)
            except Exception as error:  # noqa: BLE001 - one odd point must not stop the drain
                self._warn_once("point", type(error).__name__, "trainmon: skipped a logged point "
                                "(log_metrics expects a mapping of name -> number): %r", error)
        if points:
            self._hand_to_sink(points)
        return taken

    def _advance_step(self, step: object, wall: float, samples: object, tokens: object) -> int:
        previous = self.step
        if step is None:
            step = 0 if previous is None else previous + 1
        elif type(step) is not int:
            step = self._coerce_step(step, previous)
        if step != previous:
            self.steps_total += 1
            if previous is not None and step < previous:
                self.step_backwards_total += 1
            if self._last_step_wall is not None:
                self.step_duration_sum += max(0.0, wall - self._last_step_wall)
                self.step_duration_count += 1
            self._last_step_wall = wall
            if samples is None and self.batch_size is not None:
                self.samples_total += self.batch_size
            self.step = step
        if samples is not None:
            self.samples_total += self._count_value("samples", samples)
            self._samples_seen = True
        if tokens is not None:
            self.tokens_total += self._count_value("tokens", tokens)
            self._tokens_seen = True
        self.last_log_wall = wall
        return step

    def _coerce_step(self, step: object, previous: int | None) -> int:
        try:
            return operator.index(step)  # numpy/torch integer scalars
        except TypeError:
            pass
        value = coerce_value(step)
        if value is not None and math.isfinite(value) and value.is_integer():
            return int(value)
        self._warn_once("step", step, "trainmon: step %r is not an integer; using the previous step + 1", step)
        return 0 if previous is None else previous + 1

    def _count_value(self, what: str, value: object) -> float:
        number = coerce_value(value)
        if number is None or not math.isfinite(number) or number < 0:
            self._warn_once(what, what, "trainmon: %s=%r is not a non-negative number; ignored", what, value)
            return 0.0
        return number

    def _aggregate(self, metrics: Mapping, step: int, wall: float, points: list[Point] | None) -> None:
        sec = int(wall)
        index = sec % (self.window_seconds + 1)  # this point's per-second bucket, the same ring size for every key
        by_raw = self._by_raw
        for raw, value in metrics.items():
            stats = by_raw.get(raw)
            if stats is None:
                stats = self._register(raw)
                if stats is None:
                    continue
            number = value if type(value) is float else coerce_value(value)
            if number is None:
                self.rejected["non_numeric"] += 1
                self._warn_once("non_numeric", raw,
                                "trainmon: value %s of metric %r is not a real number; rejected "
                                "(counted in trainmon_metric_rejected_total{reason=\"non_numeric\"})",
                                _short(value), raw)
                continue
            if not stats.exported:
                stats.exported = True
                self._stats[stats.key] = stats
            stats.last = number
            if number - number == 0.0:  # finite: inf - inf and nan - nan are nan
                stats.sum += number
                stats.count += 1
                _update_extremes(stats, index, sec, number)
            else:
                stats.nonfinite += 1
                if number == number:  # NaN has no place among extremes; +/-Inf has
                    _update_extremes(stats, index, sec, number)
            if stats.is_epoch:
                self.epoch = number
            if points is not None:
                points.append((stats.key, step, number, wall))

    def _register(self, raw: object) -> _KeyStats | None:
        if raw in self._rejected_names:
            self.rejected["invalid_name"] += 1
            return None
        key = normalize_key(raw)
        if key is None:
            self._rejected_names.add(raw)
            self.rejected["invalid_name"] += 1
            log.warning("trainmon: metric name %s cannot be normalised to a usable key; its values are rejected "
                        "(counted in trainmon_metric_rejected_total{reason=\"invalid_name\"})", _short(raw))
            return None
        stats = self._by_key.get(key)
        if stats is None:
            stats = self._by_key[key] = _KeyStats(key, self.run_values, self.window_seconds + 1)
        self._by_raw[raw] = stats
        return stats

    def _hand_to_sink(self, points: list[Point]) -> None:
        sink = self.sink
        if sink is None:
            return
        try:
            sink(points)
        except Exception as error:  # noqa: BLE001 - a failing sink must never reach the trainer
            self._count_dropped("sink_error", len(points))
            self._warn_once("sink", "sink", "trainmon: point sink failed, %d points dropped: %s", len(points), error)

    def _warn_once(self, kind: str, subject: object, message: str, *args: object) -> None:
        marker = (kind, subject if _hashable(subject) else repr(subject))
        if marker not in self._warned:
            self._warned.add(marker)
            log.warning(message, *args)

    # --- validation for strict mode ---

    @staticmethod
    def validate(metrics: object, step: object) -> None:
        """Raise ValueError for what the non-strict path would reject or coerce (strict=True)."""
        if not isinstance(metrics, Mapping):
            raise ValueError(f"metrics must be a mapping of name -> number, got {type(metrics).__name__}")
        if step is not None and type(step) is not int:
            try:
                operator.index(step)
            except TypeError:
                raise ValueError(f"step must be an int or None, got {step!r}") from None
        for raw, value in metrics.items():
            if normalize_key(raw) is None:
                raise ValueError(f"metric name {raw!r} cannot be normalised to a usable key (see docs/metrics.md, "
                                 f"'Metric names')")
            if coerce_value(value) is None:
                raise ValueError(f"value {_short(value)!r} of metric {raw!r} is not a real number")

    # --- scrape ---

    def snapshot(self, now: float | None = None) -> list[Metric]:
        """Drain, then build the families as of unix time `now` (default: the current time)."""
        with self._lock:
            self._drain_locked()
            return self._families(time.time() if now is None else now)

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        try:
            families = self.snapshot()
            self.last_success = True
        except Exception as error:  # noqa: BLE001 - a scrape must not fail because of one bad value
            self.last_success = False
            log.warning("trainmon: training collector failed: %s", error)
            families = []
        self.last_duration_seconds = time.perf_counter() - started
        return families

    def _families(self, now: float) -> list[Metric]:
        run_names, run_values = self.run_label_names, self.run_values
        key_names = [*run_names, "key"]
        info = GaugeMetricFamily("trainmon_run_info", "1 per run and rank; identity labels of the run",
                                 labels=[*run_names, *self.info_labels])
        info.add_metric([*run_values, *self.info_labels.values()], 1.0)
        value = GaugeMetricFamily("trainmon_metric_value", "Last value logged for key (NaN/Inf as such)",
                                  labels=key_names)
        summary = SummaryMetricFamily("trainmon_metric", "Sum and count of the finite values logged for key",
                                      labels=key_names)
        high = GaugeMetricFamily("trainmon_metric_window_max",
                                 f"Largest value logged for key over the trailing {self.window_seconds}s",
                                 labels=key_names)
        low = GaugeMetricFamily("trainmon_metric_window_min",
                                f"Smallest value logged for key over the trailing {self.window_seconds}s",
                                labels=key_names)
        nonfinite = CounterMetricFamily("trainmon_metric_nonfinite_total",
                                        "NaN, +Inf and -Inf values logged for key (which one: trainmon_metric_value, "
                                        "or the history in the metadata API)", labels=key_names)
        oldest = int(now) - self.window_seconds + 1
        for stats in self._stats.values():
            labels = stats.labels
            value.add_metric(labels, stats.last)
            summary.add_metric(labels, stats.count, stats.sum)
            extrema = stats.window_extrema(oldest)
            if extrema is not None:
                high.add_metric(labels, extrema[0])
                low.add_metric(labels, extrema[1])
            nonfinite.add_metric(labels, stats.nonfinite)
        rejected = CounterMetricFamily("trainmon_metric_rejected_total", "Logged values rejected, by reason",
                                       labels=[*run_names, "reason"])
        for reason, count in self.rejected.items():
            rejected.add_metric([*run_values, reason], count)
        families: list[Metric] = [info, value, summary, high, low, nonfinite, rejected]
        families.extend(self._step_families(run_names, run_values))
        return families

    def _step_families(self, names: list[str], values: list[str]) -> Iterable[Metric]:
        def gauge(name: str, doc: str, number: float) -> Metric:
            family = GaugeMetricFamily(name, doc, labels=names)
            family.add_metric(values, number)
            return family

        def counter(name: str, doc: str, number: float) -> Metric:
            family = CounterMetricFamily(name, doc, labels=names)
            family.add_metric(values, number)
            return family

        world_size = self.info_labels.get("world_size")
        if world_size:
            yield gauge("trainmon_world_size", "Ranks in the run (the launcher's WORLD_SIZE)", float(world_size))
        if self.step is not None:
            yield gauge("trainmon_step", "Last step logged", self.step)
        if self.epoch is not None:
            yield gauge("trainmon_epoch", "Last epoch logged (key 'epoch')", self.epoch)
        yield counter("trainmon_steps_total", "Steps logged", self.steps_total)
        yield counter("trainmon_step_backwards_total", "Times the step went backwards (points kept)",
                      self.step_backwards_total)
        durations = SummaryMetricFamily("trainmon_step_duration_seconds", "Wall time between consecutive steps",
                                        labels=names)
        durations.add_metric(values, self.step_duration_count, self.step_duration_sum)
        yield durations
        if self._samples_seen:
            yield counter("trainmon_samples_total", "Samples processed (batch_size per step or samples=)",
                          self.samples_total)
        if self._tokens_seen:
            yield counter("trainmon_tokens_total", "Tokens processed (tokens=)", self.tokens_total)
        if self.last_log_wall is not None:
            yield gauge("trainmon_last_log_timestamp_seconds", "Unix time of the last log_metrics",
                        self.last_log_wall)
        yield counter("trainmon_checkpoints_total", "Checkpoints saved", self.checkpoints_total)
        if self.last_checkpoint_wall is not None:
            yield gauge("trainmon_last_checkpoint_timestamp_seconds", "Unix time of the last checkpoint",
                        self.last_checkpoint_wall)


def _update_extremes(stats: _KeyStats, index: int, sec: int, number: float) -> None:
    """Fold `number` into the per-second bucket `index` (a bucket from an older second starts over)."""
    if stats.secs[index] != sec:
        stats.secs[index] = sec
        stats.maxs[index] = number
        stats.mins[index] = number
    elif number > stats.maxs[index]:
        stats.maxs[index] = number
    elif number < stats.mins[index]:
        stats.mins[index] = number


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
