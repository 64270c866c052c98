"""The training collector: drain, per-key aggregates, window extremes, steps, rejects, drops, sink."""

from __future__ import annotations

import logging
import math
import random

import numpy as np
import pytest
from trainmon.exporter.training import TrainingCollector

RUN = {"experiment": "exp", "run_id": "r1", "rank": "0"}
T0 = 1_800_000_000.0


def make(**kwargs: object) -> TrainingCollector:
    return TrainingCollector(RUN, {"project": "p"}, **kwargs)  # type: ignore[arg-type]


def log(collector: TrainingCollector, metrics: dict, step: object = None, wall: float = T0,
        samples: object = None, tokens: object = None) -> None:
    """What TrainingMonitor.log_metrics appends, with a chosen wall time."""
    collector.buffer.append((dict(metrics), step, wall, next(collector.sequence), samples, tokens))


def series(collector: TrainingCollector, now: float = T0) -> dict[tuple, float]:
    """{(sample name, label items without run labels...): value} of one snapshot."""
    out = {}
    for family in collector.snapshot(now):
        for sample in family.samples:
            labels = {k: v for k, v in sample.labels.items() if k not in RUN}
            for key, value in RUN.items():
                assert sample.labels[key] == value, sample
            out[(sample.name, *sorted(labels.items()))] = sample.value
    return out


def test_last_value_sum_count_and_non_finite() -> None:
    collector = make()
    for step, loss in enumerate([1.0, 3.0, math.nan, math.inf, -math.inf, 2.0]):
        log(collector, {"loss": loss}, step)
    got = series(collector)
    assert got[("trainmon_metric_value", ("key", "loss"))] == 2.0
    assert got[("trainmon_metric_sum", ("key", "loss"))] == 6.0
    assert got[("trainmon_metric_count", ("key", "loss"))] == 3
    assert got[("trainmon_metric_nonfinite_total", ("key", "loss"))] == 3  # NaN, +Inf, -Inf
    log(collector, {"loss": math.nan}, 6)
    assert math.isnan(series(collector)[("trainmon_metric_value", ("key", "loss"))])


def test_window_extremes_keep_a_single_spike_for_the_window() -> None:
    collector = make(extrema_window=60)
    for i in range(5000):  # 5,000 steps inside one second, one spike
        log(collector, {"loss": 50.0 if i == 2345 else 1.0 + i * 1e-6}, i, wall=T0 + i / 5000)
    got = series(collector, now=T0 + 1)
    assert got[("trainmon_metric_window_max", ("key", "loss"))] == 50.0
    assert got[("trainmon_metric_window_min", ("key", "loss"))] == 1.0
    assert got[("trainmon_metric_value", ("key", "loss"))] == pytest.approx(1.004999)
    assert series(collector, now=T0 + 59)[("trainmon_metric_window_max", ("key", "loss"))] == 50.0
    log(collector, {"loss": 2.0}, 5000, wall=T0 + 70)
    later = series(collector, now=T0 + 70)
    assert later[("trainmon_metric_window_max", ("key", "loss"))] == 2.0
    assert later[("trainmon_metric_window_min", ("key", "loss"))] == 2.0


def test_window_is_omitted_when_nothing_was_logged_in_it_and_nan_is_no_extreme() -> None:
    collector = make(extrema_window=10)
    log(collector, {"loss": 1.0}, 0, wall=T0)
    assert ("trainmon_metric_window_max", ("key", "loss")) not in series(collector, now=T0 + 30)
    log(collector, {"loss": math.nan}, 1, wall=T0 + 30)
    log(collector, {"loss": math.inf}, 2, wall=T0 + 30)
    got = series(collector, now=T0 + 30)
    assert got[("trainmon_metric_window_max", ("key", "loss"))] == math.inf
    assert got[("trainmon_metric_window_min", ("key", "loss"))] == math.inf


def test_steps_none_backwards_and_durations() -> None:
    collector = make(batch_size=32)
    log(collector, {"loss": 1.0}, wall=T0)          # step 0
    log(collector, {"loss": 1.0}, wall=T0 + 0.5)    # step 1
    log(collector, {"acc": 0.5}, 1, wall=T0 + 0.6)  # same step again: not a new step
    log(collector, {"loss": 1.0}, 10, wall=T0 + 1.5)
    log(collector, {"loss": 0.7}, 4, wall=T0 + 2.0)  # backwards: kept and counted
    log(collector, {"loss": 0.6}, wall=T0 + 2.5)    # previous + 1 = 5
    got = series(collector)
    assert collector.step == 5
    assert got[("trainmon_step",)] == 5
    assert got[("trainmon_steps_total",)] == 5
    assert got[("trainmon_step_backwards_total",)] == 1
    assert got[("trainmon_step_duration_seconds_count",)] == 4
    assert got[("trainmon_step_duration_seconds_sum",)] == pytest.approx(2.5)
    assert got[("trainmon_samples_total",)] == 5 * 32
    assert got[("trainmon_metric_value", ("key", "loss"))] == 0.6
    assert got[("trainmon_last_log_timestamp_seconds",)] == T0 + 2.5
    assert ("trainmon_tokens_total",) not in got


def test_samples_tokens_epoch_and_numpy_steps() -> None:
    collector = make()
    log(collector, {"loss": 1.0, "epoch": 2}, np.int64(7), samples=16, tokens=np.int64(4096))
    log(collector, {"loss": 1.0}, 8.0, samples=16, tokens=4096)
    got = series(collector)
    assert collector.step == 8
    assert got[("trainmon_samples_total",)] == 32
    assert got[("trainmon_tokens_total",)] == 8192
    assert got[("trainmon_epoch",)] == 2


def test_rejects_are_counted_by_reason_with_one_warning_per_name(caplog: pytest.LogCaptureFixture) -> None:
    collector = make()
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        for step in range(3):
            log(collector, {"///": 1.0, "note": "text", "loss": 1.0, "arr": [1, 2]}, step)
        got = series(collector)
    assert got[("trainmon_metric_rejected_total", ("reason", "invalid_name"))] == 3
    assert got[("trainmon_metric_rejected_total", ("reason", "non_numeric"))] == 6
    assert ("trainmon_metric_value", ("key", "note")) not in got  # never had a usable value
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 3, messages
    assert any("'///'" in message for message in messages)


def test_keys_that_normalise_alike_share_one_series() -> None:
    collector = make()
    log(collector, {"val/loss": 1.0}, 0)
    log(collector, {"val.loss": 3.0}, 1)
    got = series(collector)
    assert got[("trainmon_metric_count", ("key", "val_loss"))] == 2
    assert got[("trainmon_metric_value", ("key", "val_loss"))] == 3.0


def test_full_buffer_drops_oldest_and_counts_exactly() -> None:
    dropped: list[tuple[str, int]] = []
    collector = make(buffer_size=10, count_dropped=lambda reason, n: dropped.append((reason, n)))
    for step in range(25):
        log(collector, {"loss": float(step)}, step)
    got = series(collector)
    assert dropped == [("buffer_full", 15)]
    assert got[("trainmon_metric_count", ("key", "loss"))] == 10
    for step in range(25, 28):
        log(collector, {"loss": 1.0}, step)
    series(collector)
    assert dropped == [("buffer_full", 15)]


def test_sink_receives_normalised_points_in_order_and_failures_are_contained() -> None:
    received: list[list[tuple]] = []
    collector = make()
    collector.sink = received.append
    log(collector, {"val/loss": 0.5, "bad name!": "x"}, 3, wall=T0)
    log(collector, {"acc": np.float32(0.25)}, wall=T0 + 1)
    collector.drain()
    assert received == [[("val_loss", 3, 0.5, T0), ("acc", 4, 0.25, T0 + 1)]]
    dropped: list[tuple[str, int]] = []
    failing = make(count_dropped=lambda reason, n: dropped.append((reason, n)))

    def broken(points: list) -> None:
        raise RuntimeError("api down")

    failing.sink = broken
    log(failing, {"a": 1.0, "b": 2.0}, 0)
    failing.drain()
    assert dropped == [("sink_error", 2)]
    assert series(failing)[("trainmon_metric_value", ("key", "a"))] == 1.0


def test_row_sink_gets_one_row_per_call_reusing_a_clean_call_as_it_is() -> None:
    """The metadata API's seam: (step, wall_time, {key: value}) per log call; the logged dict itself when its keys
    are normalised and its values finite floats, else a new dict by the wire contract, rejected values left out."""
    rows: list[list[tuple]] = []
    collector = make()
    collector.row_sink = rows.append
    clean = {"loss": 0.5, "acc": 0.25}
    collector.buffer.append((clean, 7, T0, next(collector.sequence), None, None))
    log(collector, {"loss": 0.4, "val/loss": 1, "acc": np.float32(0.5)}, wall=T0 + 1)
    log(collector, {"a": 1.0, "///": 2.0, "b": "x", "c": math.nan, "d": -math.inf, "e": 3.0}, wall=T0 + 2)
    log(collector, {"x b": 1.0, "x_b": 2.0}, wall=T0 + 3)  # one key after normalisation: the last value wins
    log(collector, {"only": "text"}, wall=T0 + 4)  # no accepted value: no row
    log(collector, {}, wall=T0 + 5)
    collector.drain()
    (got,) = rows
    assert got[0] == (7, T0, {"loss": 0.5, "acc": 0.25}) and got[0][2] is clean
    assert got[1:] == [(8, T0 + 1, {"loss": 0.4, "val_loss": 1.0, "acc": 0.5}),
                       (9, T0 + 2, {"a": 1.0, "c": "NaN", "d": "-Infinity", "e": 3.0}),
                       (10, T0 + 3, {"x_b": 2.0})]
    assert all(type(value) in (float, str) for row in got for value in row[2].values())
    assert series(collector)[("trainmon_metric_value", ("key", "x_b"))] == 2.0  # the exporter side is unchanged


def test_a_failing_row_sink_counts_its_points_as_dropped() -> None:
    dropped: list[tuple[str, int]] = []
    collector = make(count_dropped=lambda reason, n: dropped.append((reason, n)))
    points: list[list[tuple]] = []
    collector.sink = points.append  # a caller's point sink works beside it

    def broken(rows: list) -> None:
        raise RuntimeError("queue gone")

    collector.row_sink = broken
    log(collector, {"a": 1.0, "b": 2.0}, 0)
    log(collector, {"a": 1.0}, 1)
    collector.drain()
    assert dropped == [("sink_error", 3)] and len(points[0]) == 3


def test_runs_of_calls_aggregate_exactly_like_calls_one_by_one() -> None:
    """The drain aggregates runs of calls with the same keys column by column; a point sink makes it go call by
    call. Random calls (keys that come and go, normalise alike or not at all; NaN, infinities, ints, numpy, text;
    steps given, left out, backwards; calls across seconds): the same series, counts and rows either way."""
    rng = random.Random(7)
    keys = ["loss", "acc", "val/loss", "val_loss", "///", "epoch"]
    values = [0.5, 1.25, -3.0, 1e300, math.nan, math.inf, -math.inf, 2, np.float64(0.75), "x", True]
    calls = []
    for index in range(3000):
        chosen = keys[:2] if rng.random() < 0.7 else rng.sample(keys, rng.randint(0, 4))
        metrics = {key: (rng.choice(values) if rng.random() < 0.1 else float(rng.randint(-8, 8)) / 4)
                   for key in chosen}
        step = None if rng.random() < 0.2 else rng.choice([index, index, index, index - 5])
        calls.append((metrics, step, T0 + index * 0.013 + (2.0 if index > 2500 else 0.0)))
    results = []
    for one_by_one in (False, True):
        collector = make(extrema_window=5)
        rows: list[list[tuple]] = []
        collector.row_sink = rows.append
        if one_by_one:
            collector.sink = lambda points: None
        for start in range(0, len(calls), 700):  # several drains
            for metrics, step, wall in calls[start:start + 700]:
                log(collector, metrics, step, wall=wall)
            collector.drain()
        results.append(repr((sorted(series(collector, T0 + 3000 * 0.013).items()),  # repr: NaN equals NaN
                             [row for batch in rows for row in batch], collector.rejected, collector.step,
                             collector.steps_total, collector.step_backwards_total, collector.epoch)))
    assert results[0] == results[1]


def test_an_odd_point_does_not_stop_the_drain() -> None:
    collector = make()
    collector.buffer.append((np.zeros(3), None, T0, next(collector.sequence), None, None))  # not a mapping
    log(collector, {"loss": 4.0}, 1)
    assert series(collector)[("trainmon_metric_value", ("key", "loss"))] == 4.0


def test_strict_validation_messages() -> None:
    TrainingCollector.validate({"val/loss": np.float64(1.0), "n": 3}, 5)
    with pytest.raises(ValueError, match="cannot be normalised"):
        TrainingCollector.validate({"///": 1.0}, None)
    with pytest.raises(ValueError, match="not a real number"):
        TrainingCollector.validate({"loss": "1.0"}, None)
    with pytest.raises(ValueError, match="step must be an int"):
        TrainingCollector.validate({"loss": 1.0}, 1.5)
    with pytest.raises(ValueError, match="mapping"):
        TrainingCollector.validate([("loss", 1.0)], None)


@pytest.mark.parametrize(("kwargs", "message"), [({"extrema_window": 0.5}, "extrema_window"),
                                                 ({"batch_size": 0}, "batch_size")])
def test_bad_settings_are_clear_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make(**kwargs)
