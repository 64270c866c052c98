"""Reads of one metric series: full-fidelity pages, and the M4 reduction computed in SQL.

The reduction never loads the series into Python. For `max_points=N` over a series longer than N:
1. each bucket `(step - first_step) / width` gets its first and last step, its finite min and max value, and the
   first step holding NaN, +Inf and -Inf: one GROUP BY on PostgreSQL (a hash aggregate, which also finds the
   steps of the min and max, see `_postgres_aggregates`); on SQLite, which would sort every row for that
   GROUP BY, a few statements a bucket instead (see `_sqlite_aggregates`);
2. the points at those steps are read by step (`step IN (...)`);
3. on SQLite, for buckets whose min (or max) is not their first point's value, the first step holding it is
   looked up (`ORDER BY step LIMIT 1` a bucket, stopping at the first match; other databases: one join against a
   VALUES list of (bucket range, value)).
Steps 2 and 3 read about 4 rows a bucket. The result equals `reduction.m4_reduce` on the same points.

When buckets are at least `series_blocks.MIN_BLOCKED_WIDTH` steps wide (a long series, a short view), step 1
reads the per-block summaries instead of the points (`series_blocks.blocked_m4`): about 1/64 of the rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import BigInteger, Integer, and_, case, column, func, select, text, values
from sqlalchemy.orm import Session
from sqlalchemy.sql import ColumnElement

from ..db import SPECIAL_NAN, SPECIAL_NEG_INF, SPECIAL_POS_INF, decode_value
from ..models import MetricPoint
from ..reduction import MIN_MAX_POINTS, SeriesPoint, bucket_count, bucket_width
from . import series_blocks
from .series_blocks import Series

_COLUMNS = (MetricPoint.step, MetricPoint.value, MetricPoint.special, MetricPoint.wall_time)


def _of_series(series: Series) -> list[ColumnElement[bool]]:
    run_key, rank, key = series
    return [MetricPoint.run_key == run_key, MetricPoint.rank == rank, MetricPoint.key == key]


def _decode(rows: Iterable[Sequence]) -> list[SeriesPoint]:
    return [SeriesPoint(step, decode_value(value, special), wall_time) for step, value, special, wall_time in rows]


def series_page(session: Session, series: Series, after_step: int | None, limit: int,
                max_step: int | None = None) -> list[SeriesPoint]:
    """Up to `limit` points with step > `after_step` (all steps when None) and <= `max_step` (when given), in step
    order: full fidelity."""
    query = select(*_COLUMNS).where(*_of_series(series))
    if after_step is not None:
        query = query.where(MetricPoint.step > after_step)
    if max_step is not None:
        query = query.where(MetricPoint.step <= max_step)
    return _decode(session.execute(query.order_by(MetricPoint.step).limit(limit)))


def reduced_series(session: Session, series: Series, max_points: int, min_step: int | None = None,
                   max_step: int | None = None) -> tuple[list[SeriesPoint], bool]:
    """The series (its steps in [`min_step`, `max_step`] when given) reduced to at most `max_points` points by M4
    (see `reduction`), and whether it was reduced; a range of at most `max_points` points comes back whole. The
    buckets cut the range from its first to its last point, as `reduction.m4_reduce` does on those points."""
    if max_points < MIN_MAX_POINTS:
        raise ValueError(f"max_points must be >= {MIN_MAX_POINTS}, got {max_points}")
    head = series_page(session, series, None if min_step is None else min_step - 1, max_points + 1, max_step)
    if len(head) <= max_points:
        return head, False
    last = select(func.max(MetricPoint.step)).where(*_of_series(series))
    last_step = session.scalar(last if max_step is None else last.where(MetricPoint.step <= max_step))
    reduced = _sql_m4(session, series, head[0].step, int(last_step), bucket_count(max_points, 4))
    if len(reduced) > max_points:  # buckets holding NaN use a fifth slot; wider buckets make room
        reduced = _sql_m4(session, series, head[0].step, int(last_step), bucket_count(max_points, 5))
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
    min_step: int | None = None  # first step holding min_value / max_value, when the aggregate found it
    max_step: int | None = None


def _sql_m4(session: Session, series: Series, first_step: int, last_step: int,
            buckets: int) -> list[SeriesPoint]:
    width = bucket_width(first_step, last_step, buckets)
    if width >= series_blocks.MIN_BLOCKED_WIDTH:  # buckets span many blocks: merge block summaries instead
        chosen = series_blocks.blocked_m4(session, series, first_step, width, last_step)
        by_step = {p.step: p for p in _decode(series_blocks.points_at(session.connection(), series, chosen))}
        return [by_step[step] for step in chosen]
    dialect = session.get_bind().dialect.name
    sqlite = dialect == "sqlite"
    if sqlite:
        aggregates = _sqlite_aggregates
    elif dialect == "postgresql" and last_step < EXACT_FLOAT_STEPS:
        aggregates = _postgres_aggregates
    else:
        aggregates = _grouped_aggregates
    found = aggregates(session, series, first_step, last_step, width)
    known = [step for b in found for step in (*b.steps, b.min_step, b.max_step) if step is not None]
    points = {p.step: p for p in _points_at(session, series, known)}
    lookups = _extreme_lookups(found, points)
    (_sqlite_first_steps if sqlite else _joined_first_steps)(session, series, found, lookups)
    chosen = sorted({step for b in found for step in b.steps})
    missing = [step for step in chosen if step not in points]
    points.update((p.step, p) for p in _points_at(session, series, missing))
    return [points[step] for step in chosen]


def _bucket(lo: int, width: int, row: Sequence) -> _Bucket:
    first, last, low, high, nan, pos_inf, neg_inf = row
    specials = {kind: step for kind, step in ((SPECIAL_NAN, nan), (SPECIAL_POS_INF, pos_inf),
                                              (SPECIAL_NEG_INF, neg_inf)) if step is not None}
    return _Bucket(lo, lo + width - 1, first, last, low, high, specials, {first, last, *specials.values()})


def _grouped_aggregates(session: Session, series: Series, first_step: int, last_step: int,
                        width: int) -> list[_Bucket]:
    """Every bucket's aggregates in one GROUP BY (a hash aggregate on PostgreSQL)."""
    bucket = ((MetricPoint.step - first_step) // width).label("bucket")  # integer division on both databases

    def first_step_with(kind: int) -> ColumnElement[int]:
        return func.min(case((MetricPoint.special == kind, MetricPoint.step)))

    aggregate = (select(bucket, func.min(MetricPoint.step), func.max(MetricPoint.step), func.min(MetricPoint.value),
                        func.max(MetricPoint.value), first_step_with(SPECIAL_NAN), first_step_with(SPECIAL_POS_INF),
                        first_step_with(SPECIAL_NEG_INF))
                 .where(*_of_series(series), MetricPoint.step.between(first_step, last_step)).group_by(bucket))
    return [_bucket(first_step + int(number) * width, width, rest)
            for number, *rest in session.execute(aggregate)]


EXACT_FLOAT_STEPS = 2**53  # steps below this survive a round trip through float8 (the arrays below)
_POSTGRES_AGGREGATES = text(
    "SELECT (step - :first) / :width, MIN(step), MAX(step), "
    "MIN(ARRAY[value, step::float8]) FILTER (WHERE special = 0), "
    "MAX(ARRAY[value, -step::float8]) FILTER (WHERE special = 0), "
    f"MIN(step) FILTER (WHERE special = {SPECIAL_NAN}), MIN(step) FILTER (WHERE special = {SPECIAL_POS_INF}), "
    f"MIN(step) FILTER (WHERE special = {SPECIAL_NEG_INF}) "
    "FROM metric_points WHERE run_key = :run AND rank = :rank AND key = :key AND step BETWEEN :first AND :last "
    "GROUP BY 1")


def _postgres_aggregates(session: Session, series: Series, first_step: int, last_step: int,
                         width: int) -> list[_Bucket]:
    """One hash GROUP BY that also finds the first step of each bucket's min and max: arrays compare element by
    element, so MIN([value, step]) is the min value at its smallest step, MAX([value, -step]) the max value at
    its smallest step. No second pass."""
    found = []
    parameters = {"first": first_step, "last": last_step, "width": width, "run": series[0], "rank": series[1],
                  "key": series[2]}
    for number, first, last, lowest, highest, nan, pos_inf, neg_inf in session.execute(_POSTGRES_AGGREGATES,
                                                                                          parameters):
        b = _bucket(first_step + int(number) * width, width, (first, last, lowest and lowest[0],
                                                              highest and highest[0], nan, pos_inf, neg_inf))
        b.min_step = None if lowest is None else int(lowest[1])
        b.max_step = None if highest is None else -int(highest[1])
        found.append(b)
    return found


_SQLITE_RANGE = "FROM metric_points WHERE run_key = ? AND rank = ? AND key = ? AND step BETWEEN ? AND ?"
_SQLITE_EXTREMES = f"SELECT MIN(value), MAX(value), MAX(special) {_SQLITE_RANGE}"
_SQLITE_EDGE_STEPS = (f"SELECT (SELECT step {_SQLITE_RANGE} ORDER BY step LIMIT 1), "
                      f"(SELECT step {_SQLITE_RANGE} ORDER BY step DESC LIMIT 1)")
_SQLITE_SPECIAL_STEPS = (f"SELECT MIN(CASE WHEN special = {SPECIAL_NAN} THEN step END), "
                         f"MIN(CASE WHEN special = {SPECIAL_POS_INF} THEN step END), "
                         f"MIN(CASE WHEN special = {SPECIAL_NEG_INF} THEN step END) {_SQLITE_RANGE} AND special != 0")
_SQLITE_FIRST_WITH_VALUE = f"SELECT step {_SQLITE_RANGE} AND value = ? ORDER BY step LIMIT 1"


def _sqlite_aggregates(session: Session, series: Series, first_step: int, last_step: int,
                       width: int) -> list[_Bucket]:
    """SQLite sorts every row for a GROUP BY on an expression; per bucket, one index range scan for its extremes
    (the cheapest aggregate: no CASE, no step), two index seeks for its first and last step, and only where the
    bucket holds a non-finite value a second scan for their steps. The statements run on the request's own
    connection (same transaction) through the driver's statement cache."""
    found = []
    with _sqlite_cursor(session) as cursor:
        for lo in range(first_step, last_step + 1, width):
            span = (*series, lo, min(lo + width - 1, last_step))  # the last bucket ends with the range
            low, high, special = cursor.execute(_SQLITE_EXTREMES, span).fetchone()
            if special is None:  # no rows in this bucket
                continue
            first, last = cursor.execute(_SQLITE_EDGE_STEPS, span + span).fetchone()
            specials = cursor.execute(_SQLITE_SPECIAL_STEPS, span).fetchone() if special else (None, None, None)
            found.append(_bucket(lo, width, (first, last, low, high, *specials)))
    return found


def _sqlite_cursor(session: Session) -> contextlib.closing:
    """A cursor on the session's own sqlite3 connection: inside the request's transaction, statements cached."""
    return contextlib.closing(session.connection().connection.driver_connection.cursor())


def _extreme_lookups(found: list[_Bucket], points: dict[int, SeriesPoint]) -> list[tuple[int, int, int, float]]:
    """Add to each bucket the step of its min and max where it is known (an infinity, or the bucket's first
    point); return (bucket index, lo, hi, value) for the finite extremes whose first step must be looked up."""
    lookups: list[tuple[int, int, int, float]] = []
    for index, b in enumerate(found):
        for kind, extreme, known in ((SPECIAL_NEG_INF, b.min_value, b.min_step),
                                     (SPECIAL_POS_INF, b.max_value, b.max_step)):
            if kind in b.special_steps or extreme is None:
                continue
            if known is not None:
                b.steps.add(known)
            elif points[b.first_step].value == extreme:
                b.steps.add(b.first_step)
            else:
                lookups.append((index, b.lo, b.hi, extreme))
    return lookups


def _sqlite_first_steps(session: Session, series: Series, found: list[_Bucket],
                        lookups: list[tuple[int, int, int, float]]) -> None:
    with _sqlite_cursor(session) as cursor:
        for index, lo, hi, value in lookups:
            row = cursor.execute(_SQLITE_FIRST_WITH_VALUE, (*series, lo, hi, value)).fetchone()
            found[index].steps.add(int(row[0]))


def _joined_first_steps(session: Session, series: Series, found: list[_Bucket],
                        lookups: list[tuple[int, int, int, float]]) -> None:
    """The first step holding each looked-up value, by a join against a VALUES list of (bucket range, value)."""
    for start in range(0, len(lookups), 2000):
        chunk = lookups[start:start + 2000]
        wanted = values(column("bucket", Integer), column("lo", BigInteger), column("hi", BigInteger),
                        column("v", MetricPoint.value.type), name="wanted").data(chunk).cte("wanted")
        query = (select(wanted.c.bucket, func.min(MetricPoint.step))
                 .join(MetricPoint, and_(*_of_series(series), MetricPoint.step >= wanted.c.lo,
                                         MetricPoint.step <= wanted.c.hi, MetricPoint.value == wanted.c.v))
                 .group_by(wanted.c.bucket, wanted.c.v))
        for index, step in session.execute(query):
            found[index].steps.add(int(step))


def _points_at(session: Session, series: Series, steps: Sequence[int]) -> list[SeriesPoint]:
    result: list[SeriesPoint] = []
    for start in range(0, len(steps), 5000):
        chunk = steps[start:start + 5000]
        query = select(*_COLUMNS).where(*_of_series(series), MetricPoint.step.in_(chunk))
        result.extend(_decode(session.execute(query)))
    return result
