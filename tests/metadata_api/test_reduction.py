"""M4 reduction: extremes survive, NaN/Inf are kept, small series pass through, the budget holds."""

from __future__ import annotations

import math
import random

import pytest
from trainmon.metadata_api.reduction import SeriesPoint, bucket_index, bucket_width, m4_reduce


def series(values: list[float], first_step: int = 0) -> list[SeriesPoint]:
    return [SeriesPoint(step=first_step + i, value=v, wall_time=1000.0 + i) for i, v in enumerate(values)]


def test_one_step_spike_in_a_million_points_survives_a_2000_point_view() -> None:
    values = [math.sin(i / 5000.0) for i in range(1_000_000)]
    values[654_321] = 100.0
    values[123_456] = -100.0
    reduced = m4_reduce(series(values), 2000)
    assert len(reduced) <= 2000
    by_step = {point.step: point.value for point in reduced}
    assert by_step[654_321] == 100.0
    assert by_step[123_456] == -100.0
    assert reduced[0].step == 0 and reduced[-1].step == 999_999


def test_each_bucket_keeps_first_last_min_and_max() -> None:
    values = [5.0, 9.0, 1.0, 6.0, 7.0, 3.0, 8.0, 2.0]
    reduced = m4_reduce(series(values), 5)  # one bucket
    assert [(p.step, p.value) for p in reduced] == [(0, 5.0), (1, 9.0), (2, 1.0), (7, 2.0)]


def test_result_is_sorted_by_step_without_repeats_and_within_budget() -> None:
    rng = random.Random(7)
    points = series([rng.gauss(0, 1) for _ in range(10_000)], first_step=500)
    for max_points in (5, 6, 17, 100, 999):
        reduced = m4_reduce(points, max_points)
        steps = [p.step for p in reduced]
        assert steps == sorted(set(steps))
        assert len(reduced) <= max_points


def test_global_extremes_are_always_kept() -> None:
    rng = random.Random(3)
    points = series([rng.uniform(-1, 1) for _ in range(5000)])
    reduced = m4_reduce(points, 40)
    assert min(p.value for p in reduced) == min(p.value for p in points)
    assert max(p.value for p in reduced) == max(p.value for p in points)


def test_non_finite_values_are_kept() -> None:
    values = [0.5] * 10_000
    values[2000] = float("inf")
    values[4000] = float("-inf")
    values[6000] = float("nan")
    values[6001] = float("nan")
    values[6002] = 7.0  # a finite spike in the same bucket as the NaN
    reduced = m4_reduce(series(values), 40)
    by_step = {p.step: p.value for p in reduced}
    assert by_step[2000] == math.inf
    assert by_step[4000] == -math.inf
    assert math.isnan(by_step[6000])
    assert 6001 not in by_step  # one NaN per bucket is enough to show it
    assert by_step[6002] == 7.0
    assert len(reduced) <= 40


def test_nan_everywhere_still_fits_the_budget() -> None:
    values = [float("nan") if i % 2 else float(i) for i in range(10_000)]
    for max_points in (5, 20, 101):
        reduced = m4_reduce(series(values), max_points)
        assert len(reduced) <= max_points
        assert any(math.isnan(p.value) for p in reduced)


def test_series_no_longer_than_max_points_passes_through() -> None:
    points = series([1.0, float("nan"), 3.0, float("inf")])
    assert m4_reduce(points, 5) == points
    assert m4_reduce(points, 1000) == points
    assert m4_reduce([], 10) == []


def test_sparse_steps_use_step_width_buckets() -> None:
    points = [SeriesPoint(step, float(step), 0.0) for step in [*range(10), 1_000_000]]
    width = bucket_width(0, 1_000_000, 2)
    assert bucket_index(1_000_000, 0, width) == 1
    assert bucket_index(9, 0, width) == 0
    assert [p.step for p in m4_reduce(points, 8)] == [0, 9, 1_000_000]


def test_max_points_below_five_is_refused() -> None:
    with pytest.raises(ValueError, match="max_points"):
        m4_reduce(series([1.0] * 10), 4)
