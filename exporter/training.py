"""Training series: the hot-path buffer, the drain that aggregates it, and the scrape-time collector.

`TrainingMonitor.log_metrics` only appends ``(metrics_copy, step, wall_time, seq, samples, tokens)`` to a bounded
deque (no lock, no per-key work). `drain()` runs at every scrape and on the sampler's short tick: it normalises
names, coerces values, updates per-key aggregates (last value, finite sum/count, non-finite counts, per-second
min/max buckets over the trailing `extrema_window`) and hands what it took to two optional sinks: ``(key, step,
value, wall_time)`` points to `sink` (a public seam), and ``(step, wall_time, {key: value})`` rows, one per log
call, to `row_sink` (the metadata API's seam: no object per point; the call's own dict when its keys are
normalised already and its values finite floats). Sequence numbers reveal points the full buffer dropped.

The drain costs the training loop GIL time, so it aggregates runs of consecutive calls that log the same keys
(a training loop's calls) a column per key, with builtins (sum, max, min) instead of a Python step per value;
anything unusual in a run (a new or unusable key, a value that is not a finite float) sends that run through
the value-by-value path, with the same result.
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
from trainmon.common.wire import Row, json_value

from .values import coerce_value

log = logging.getLogger("trainmon.exporter")

#: One point handed to a sink: (normalised key, step, value, unix wall time).
Point = tuple[str, int, float, float]
#: Receives the points of one drain, in logging order; must be quick (e.g. append to its own queue).
PointSink = Callable[[list[Point]], None]
#: Receives the rows of one drain (one per log call with an accepted value), in logging order; must be quick.
RowSink = Callable[[list[Row]], None]
#: Reports dropped points by reason (wired to the health collector).
DropCounter = Callable[[str, int], None]

REJECT_REASONS = ("invalid_name", "non_numeric")
_METRICS = operator.itemgetter(2)  # of a (step, wall time, metrics) call
_WALL = operator.itemgetter(1)
_FLOATS = {float}
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
        self.row_sink: RowSink | None = None
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
        rows: list[Row] | None = [] if self.row_sink is not None else None
        # Calls are aggregated in runs of consecutive calls that log the same keys in the same order (a training
        # loop's calls, as a rule): a column per key, summed and compared by builtins (`_aggregate_run`), rather
        # than key by key in Python. A point sink wants the points call by call: then calls go one by one.
        by_runs = points is None
        run: list[Row] = []  # (step, wall time, metrics) of the current run's calls
        run_keys: tuple | None = None
        expected = self._expected_seq
        # `_advance_step`'s state in locals while the loop runs (written back around its uncommon cases)
        previous, last_step_wall, batch_size = self.step, self._last_step_wall, self.batch_size
        steps_total, backwards, duration_sum, durations = (self.steps_total, self.step_backwards_total,
                                                           self.step_duration_sum, self.step_duration_count)
        logged_wall = None
        for _ in range(taken):
            try:
                metrics, step, wall, seq, samples, tokens = popleft()
            except IndexError:  # a re-entrant drain (e.g. finish() from a SIGTERM handler) took the rest
                break
            if seq != expected:
                self._count_dropped("buffer_full", seq - expected)
            expected = seq + 1
            try:
                if type(metrics) is not dict:  # something with .copy() that is not a dict copy
                    metrics = dict(metrics.items())
                if (step is None or type(step) is int) and samples is None and tokens is None:
                    if step is None:  # `_advance_step`, inline: its common case
                        step = 0 if previous is None else previous + 1
                    if step != previous:
                        steps_total += 1
                        if previous is not None and step < previous:
                            backwards += 1
                        if last_step_wall is not None:
                            if wall > last_step_wall:
                                duration_sum += wall - last_step_wall
                            durations += 1
                        last_step_wall = wall
                        if batch_size is not None:
                            self.samples_total += batch_size
                        previous = step
                else:
                    self.step, self._last_step_wall, self.steps_total, self.step_backwards_total = (
                        previous, last_step_wall, steps_total, backwards)
                    self.step_duration_sum, self.step_duration_count = duration_sum, durations
                    step = self._advance_step(step, wall, samples, tokens)
                    previous, last_step_wall, steps_total, backwards = (
                        self.step, self._last_step_wall, self.steps_total, self.step_backwards_total)
                    duration_sum, durations = self.step_duration_sum, self.step_duration_count
                logged_wall = wall
                if by_runs:
                    keys = tuple(metrics)
                    if keys != run_keys:
                        if run:
                            self._aggregate_run(run_keys, run, rows)  # type: ignore[arg-type]
                        run, run_keys = [], keys
                    run.append((step, wall, metrics))
                else:
                    self._aggregate(metrics, step, wall, points, rows)
            except Exception as error:  # noqa: BLE001 - one odd point must not stop the drain
                self._warn_once("point", type(error).__name__, "trainmon: skipped a logged point "
                                "(log_metrics expects a mapping of name -> number): %r", error)
        self._expected_seq = expected
        self.step, self._last_step_wall, self.steps_total, self.step_backwards_total = (
            previous, last_step_wall, steps_total, backwards)
        self.step_duration_sum, self.step_duration_count = duration_sum, durations
        if logged_wall is not None:
            self.last_log_wall = logged_wall
        if run:
            self._aggregate_run(run_keys, run, rows)  # type: ignore[arg-type]
        if points:
            self._hand_to_sink(self.sink, points)
        if rows:
            self._hand_to_sink(self.row_sink, rows)
        return taken

    def _aggregate_run(self, keys: tuple, run: list[Row], rows: list[Row] | None) -> None:
        """Aggregate consecutive calls `run` ((step, wall time, metrics) each) that logged `keys` in this order:
        column by column when every key is usable and every value a finite float (sum, max, min: builtins), else
        call by call (`_aggregate`, which rejects, coerces and warns). The same result either way."""
        columns = list(zip(*map(dict.values, map(_METRICS, run)), strict=True)) if keys else []
        by_raw = self._by_raw
        stats_of = []
        clean = True  # every key normalised already: the calls' own dicts are the rows
        for raw, column in zip(keys, columns, strict=True):
            stats = by_raw.get(raw)  # a key not seen yet (or refused) goes call by call: `_aggregate` registers it
            if stats is None or set(map(type, column)) != _FLOATS:
                stats_of = None
                break
            total = sum(column)
            if total - total != 0.0:  # a NaN or an infinity (or an overflow): value by value
                stats_of = None
                break
            stats_of.append(stats)
            clean = clean and raw == stats.key
        if stats_of is None:
            self._aggregate_calls(run, rows)
            return
        walls = list(map(_WALL, run))
        first_sec, last_sec = int(min(walls)), int(max(walls))
        if first_sec == last_sec:
            spans = [(0, len(run), first_sec)]
        else:  # the run crosses a second: one extremes bucket per second
            secs = list(map(int, walls))
            spans, start = [], 0
            for position in range(1, len(secs) + 1):
                if position == len(secs) or secs[position] != secs[start]:
                    spans.append((start, position, secs[start]))
                    start = position
        ring = self.window_seconds + 1
        for stats, column in zip(stats_of, columns, strict=True):
            if not stats.exported:
                stats.exported = True
                self._stats[stats.key] = stats
            stats.sum = sum(column, stats.sum)
            stats.count += len(column)
            stats.last = column[-1]
            if stats.is_epoch:
                self.epoch = column[-1]
            for start, stop, sec in spans:
                part = column if stop - start == len(column) else column[start:stop]
                high, low, index = max(part), min(part), sec % ring
                if stats.secs[index] != sec:
                    stats.secs[index] = sec
                    stats.maxs[index] = high
                    stats.mins[index] = low
                else:
                    if high > stats.maxs[index]:
                        stats.maxs[index] = high
                    if low < stats.mins[index]:
                        stats.mins[index] = low
        if rows is not None and stats_of:
            if clean:
                rows.extend(run)
            else:  # the same values under their normalised keys (two keys alike: the later value, as sent)
                names = [stats.key for stats in stats_of]
                rows.extend((step, wall, dict(zip(names, metrics.values(), strict=True)))
                            for step, wall, metrics in run)

    def _aggregate_calls(self, run: list[Row], rows: list[Row] | None) -> None:
        for step, wall, metrics in run:
            try:
                self._aggregate(metrics, step, wall, None, rows)
            except Exception as error:  # noqa: BLE001 - one odd point must not stop the drain
                self._warn_once("point", type(error).__name__, "trainmon: skipped a logged point "
                                "(log_metrics expects a mapping of name -> number): %r", error)

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

    def _aggregate(self, metrics: dict, step: int, wall: float, points: list[Point] | None,
                   rows: list[Row] | None) -> None:
        sec = int(wall)
        index = sec % (self.window_seconds + 1)  # this point's per-second bucket, the same ring size for every key
        by_raw = self._by_raw
        # The row's values: `metrics` itself while every key is normalised already and every value a finite float
        # (the common case: no new object); a new dict from the first key or value that is not.
        values: dict | None = None if rows is not None else metrics
        for raw, value in metrics.items():
            stats = by_raw.get(raw)
            if stats is None:
                stats = self._register(raw)
                if stats is None:
                    if values is None:
                        values = _head(metrics, raw)
                    continue
            number = value if type(value) is float else coerce_value(value)
            if number is None:
                self.rejected["non_numeric"] += 1
                self._warn_once("non_numeric", raw,
                                "trainmon: value %s of metric %r is not a real number; rejected "
                                "(counted in trainmon_metric_rejected_total{reason=\"non_numeric\"})",
                                _short(value), raw)
                if values is None:
                    values = _head(metrics, raw)
                continue
            if not stats.exported:
                stats.exported = True
                self._stats[stats.key] = stats
            stats.last = number
            if number - number == 0.0:  # finite: inf - inf and nan - nan are nan
                stats.sum += number
                stats.count += 1
                secs = stats.secs  # _update_extremes, inlined (the drain's hottest line)
                if secs[index] != sec:
                    secs[index] = sec
                    stats.maxs[index] = number
                    stats.mins[index] = number
                elif number > stats.maxs[index]:
                    stats.maxs[index] = number
                elif number < stats.mins[index]:
                    stats.mins[index] = number
                if values is None:
                    if value is not number or raw != stats.key:
                        values = _head(metrics, raw)
                        values[stats.key] = number
                elif values is not metrics:
                    values[stats.key] = number
            else:
                stats.nonfinite += 1
                if number == number:  # NaN has no place among extremes; +/-Inf has
                    _update_extremes(stats, index, sec, number)
                if values is None:
                    values = _head(metrics, raw)
                if values is not metrics:
                    values[stats.key] = json_value(number)
            if stats.is_epoch:
                self.epoch = number
            if points is not None:
                points.append((stats.key, step, number, wall))
        if rows is not None:
            if values is None:
                values = metrics
            if values:  # a call with no accepted value (or none at all) is no row
                rows.append((step, wall, values))

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

    def _hand_to_sink(self, sink: Callable[[list], None] | None, items: list) -> None:
        if sink is None:
            return
        try:
            sink(items)
        except Exception as error:  # noqa: BLE001 - a failing sink must never reach the trainer
            count = sum(len(item[2]) for item in items) if sink is self.row_sink else len(items)
            self._count_dropped("sink_error", count)
            self._warn_once("sink", sink, "trainmon: point sink failed, %d points dropped: %s", count, error)

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


def _head(metrics: dict, stop: object) -> dict:
    """The entries of `metrics` before the key `stop` (all of them accepted as they are: the row's values so far)."""
    head = {}
    for raw, value in metrics.items():
        if raw is stop:
            break
        head[raw] = value
    return head


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hashable(value: object) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True
