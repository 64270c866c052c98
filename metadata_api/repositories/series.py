"""Reads of one metric series: full-fidelity pages, and the M4 reduction computed in SQL.

The reduction never loads the series into Python. For `max_points=N` over a series longer than N:
1. one GROUP BY over the bucket number `(step - first_step) / width` gives each bucket's first and last step,
   its finite min and max value, and the first step holding NaN, +Inf and -Inf;
2. the points at those steps are read by step (`step IN (...)`);
3. for buckets whose min (or max) is neither their first nor their last value, one join against a VALUES list
   of (bucket range, value) finds the first step holding it.
Steps 2 and 3 read about 4 rows a bucket. The result equals `reduction.m4_reduce` on the same points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Integer, and_, case, column, func, select, values
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from ..db import SPECIAL_NAN, SPECIAL_NEG_INF, SPECIAL_POS_INF, decode_value
from ..models import MetricPoint
from ..reduction import MIN_MAX_POINTS, SeriesPoint, bucket_count, bucket_width

_COLUMNS = (MetricPoint.step, MetricPoint.value, MetricPoint.special, MetricPoint.wall_time)


def _of_series(run_id: str, key: str) -> list[ColumnElement[bool]]:
    return [MetricPoint.run_id == run_id, MetricPoint.key == key]


def _decode(rows: Iterable[Sequence]) -> list[SeriesPoint]:
    return [SeriesPoint(step, decode_value(value, special), wall_time) for step, value, special, wall_time in rows]


def series_page(session: Session, run_id: str, key: str, after_step: int | None, limit: int) -> list[SeriesPoint]:
    """Up to `limit` points with step > `after_step` (all steps when None), in step order: full fidelity."""
    query = select(*_COLUMNS).where(*_of_series(run_id, key))
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    return _decode(session.execute(query.order_by(MetricPoint.step).limit(limit)))


def series_keys(session: Session, run_id: str) -> list[str]:
    """The metric keys a run has points for."""
    query = select(MetricPoint.key).where(MetricPoint.run_id == run_id).distinct().order_by(MetricPoint.key)
    return list(session.scalars(query))


def reduced_series(session: Session, run_id: str, key: str, max_points: int) -> tuple[list[SeriesPoint], bool]:
    """The series reduced to at most `max_points` points by M4 (see `reduction`), and whether it was reduced;
    a series of at most `max_points` points comes back whole."""
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be >= {MIN_MAX_POINTS}, got {max_points}")
    head = series_page(session, run_id, key, None, max_points + 1)
    if len(head) <= max_points:
        return head, False
    last_step = session.scalar(select(func.max(MetricPoint.step)).where(*_of_series(run_id, key)))
    reduced = _sql_m4(session, run_id, key, head[0].step, int(last_step), bucket_count(max_points, 4))
    if len(reduced) > max_points:  # buckets holding NaN use a fifth slot; wider buckets make room
        reduced = _sql_m4(session, run_id, key, head[0].step, int(last_step), bucket_count(max_points, 5))
    return reduced, True


@dataclass
class _Bucket:
    lo: int
    hi: int
    first_step: int
    last_step: int
    min_value: float | None
    max_value: float | None
    special_steps: dict[int, int]  # special kind -> first step holding it
    steps: set[int] = field(default_factory=set)


def _sql_m4(session: Session, run_id: str, key: str, first_step: int, last_step: int,
            buckets: int) -> list[SeriesPoint]:
    width = bucket_width(first_step, last_step, buckets)
    bucket = ((MetricPoint.step - first_step) // width).label("bucket")  # integer division on both databases

    def first_step_with(kind: int) -> ColumnElement[int]:
        return func.min(case((MetricPoint.special == kind, MetricPoint.step)))

    aggregate = (select(bucket, func.min(MetricPoint.step), func.max(MetricPoint.step), func.min(MetricPoint.value),
                        func.max(MetricPoint.value), first_step_with(SPECIAL_NAN), first_step_with(SPECIAL_POS_INF),
                        first_step_with(SPECIAL_NEG_INF))
                 .where(*_of_series(run_id, key)).group_by(bucket))
    found: list[_Bucket] = []
    for number, first, last, low, high, nan, pos_inf, neg_inf in session.execute(aggregate):
        specials = {kind: step for kind, step in ((SPECIAL_NAN, nan), (SPECIAL_POS_INF, pos_inf),
                                                  (SPECIAL_NEG_INF, neg_inf)) if step is not None}
        lo = first_step + int(number) * width
        found.append(_Bucket(lo, lo + width - 1, first, last, low, high, specials, {first, last, *specials.values()}))
    known = [step for b in found for step in b.steps]
    points = {p.step: p for p in _points_at(session, run_id, key, known)}
    _add_extreme_steps(session, run_id, key, found, points)
    chosen = sorted({step for b in found for step in b.steps})
    missing = [step for step in chosen if step not in points]
    points.update((p.step, p) for p in _points_at(session, run_id, key, missing))
    return [points[step] for step in chosen]


def _points_at(session: Session, run_id: str, key: str, steps: Sequence[int]) -> list[SeriesPoint]:
    result: list[SeriesPoint] = []
    for start in range(0, len(steps), 5000):
        chunk = steps[start:start + 5000]
        query = select(*_COLUMNS).where(*_of_series(run_id, key), MetricPoint.step.in_(chunk))
        result.extend(_decode(session.execute(query)))
    return result


def _add_extreme_steps(session: Session, run_id: str, key: str, found: list[_Bucket],
                       points: dict[int, SeriesPoint]) -> None:
    """Add to each bucket the step of its min and max: an infinity when it has one, else the first step holding
    the finite extreme (looked up in SQL unless the bucket's first point holds it)."""
    lookups: list[tuple[int, int, int, float]] = []  # bucket index, lo, hi, value
    for index, b in enumerate(found):
        for kind, extreme in ((SPECIAL_NEG_INF, b.min_value), (SPECIAL_POS_INF, b.max_value)):
            if kind in b.special_steps or extreme is None:
                continue
            if points[b.first_step].value == extreme:
                b.steps.add(b.first_step)
            else:
                lookups.append((index, b.lo, b.hi, extreme))
    for start in range(0, len(lookups), 2000):
        chunk = lookups[start:start + 2000]
        wanted = values(column("bucket", Integer), column("lo", BigInteger), column("hi", BigInteger),
                        column("v", MetricPoint.value.type), name="wanted").data(chunk).cte("wanted")
        query = (select(wanted.c.bucket, func.min(MetricPoint.step))
                 .join(MetricPoint, and_(*_of_series(run_id, key), MetricPoint.step >= wanted.c.lo,
                                         MetricPoint.step <= wanted.c.hi, MetricPoint.value == wanted.c.v))
                 .group_by(wanted.c.bucket, wanted.c.v))
        for index, step in session.execute(query):
            found[index].steps.add(int(step))
