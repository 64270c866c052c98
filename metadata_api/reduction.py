"""M4 min/max-preserving downsampling of one metric series.

The step range is cut into equal-width buckets; each bucket keeps its first point, last point, the point with
the smallest value and the point with the largest value (M4: Jugel et al., VLDB 2014). A one-step spike
therefore survives any reduction, however many points the series has.

Non-finite values: +Inf and -Inf order as ordinary extremes (they become a bucket's max or min). NaN compares
with nothing, so a bucket that contains NaN keeps its first NaN point as a fifth point: a diverged loss is
never hidden by a reduction. The result never has more than `max_points` points: when NaN points would push it
over, the buckets are made wider (`max_points // 5`) and every bucket then fits in its budget.

This module is pure (stdlib only); `metadata_api.repositories.series` pushes the same bucketing into SQL.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

MIN_MAX_POINTS = 5
"""The smallest `max_points` a reduction accepts: one bucket keeps up to five points (with its first NaN)."""


@dataclass(frozen=True)
class SeriesPoint:
    """One logged value of a series."""

    step: int
    value: float
    wall_time: float


def bucket_count(max_points: int, slots_per_bucket: int = 4) -> int:
    """How many buckets a reduction to `max_points` uses."""
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be >= {MIN_MAX_POINTS}, got {max_points}")
    return max(1, max_points // slots_per_bucket)


def bucket_width(first_step: int, last_step: int, buckets: int) -> int:
    """Steps per bucket when [first_step, last_step] is cut into at most `buckets` equal-width buckets."""
    span = last_step - first_step + 1
    return max(1, -(-span // buckets))


def bucket_index(step: int, first_step: int, width: int) -> int:
    """The bucket of `step` (buckets of `width` steps from `first_step`); SQL computes the same expression."""
    return (step - first_step) // width


def m4_reduce(points: Sequence[SeriesPoint], max_points: int) -> list[SeriesPoint]:
    """Reduce `points` (sorted by step) to at most `max_points`, keeping every bucket's extremes.

    A series with no more than `max_points` points comes back unchanged.
    """
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be >= {MIN_MAX_POINTS}, got {max_points}")
    if len(points) <= max_points:
        return list(points)
    reduced = _reduce(points, bucket_count(max_points, 4))
    if len(reduced) > max_points:  # only buckets holding NaN can overflow their four slots
        reduced = _reduce(points, bucket_count(max_points, 5))
    return reduced


def _reduce(points: Sequence[SeriesPoint], buckets: int) -> list[SeriesPoint]:
    first_step = points[0].step
    width = bucket_width(first_step, points[-1].step, buckets)
    kept: list[SeriesPoint] = []
    start = 0
    while start < len(points):
        bucket = bucket_index(points[start].step, first_step, width)
        end = start + 1
        while end < len(points) and bucket_index(points[end].step, first_step, width) == bucket:
            end += 1
        kept.extend(_bucket_extremes(points, start, end))
        start = end
    return kept


def _bucket_extremes(points: Sequence[SeriesPoint], start: int, end: int) -> list[SeriesPoint]:
    """The first, last, min, max (and first NaN) of points[start:end], in step order, without repeats."""
    chosen = {start, end - 1}
    lowest = highest = first_nan = None
    for index in range(start, end):
        value = points[index].value
        if math.isnan(value):
            if first_nan is None:
                first_nan = index
            continue
        if lowest is None or value < points[lowest].value:
            lowest = index
        if highest is None or value > points[highest].value:
            highest = index
    chosen.update(index for index in (lowest, highest, first_nan) if index is not None)
    return [points[index] for index in sorted(chosen)]
