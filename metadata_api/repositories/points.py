"""Metric points (what trainers log): batch upsert on the natural key (run_key, rank, key, step), and an
experiment's points. One series of a run, reduced or paged, is `repositories.series`."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import connection_of, decode_value
from ..models import MetricPoint, Run
from . import series_blocks
from .upsert import value_runs

PointRow = tuple[str, int, float | None, int, float]
"""key, step, value, special, wall_time: the value encoded as stored (`db.encode_value`)."""


def upsert_points(database: Session | Any, run_key: int, rank: int, points: Sequence[PointRow]) -> int:
    """Store `points` of one rank (one per (key, step): the route keeps the last point given for each); a (key, step)
    already stored gets the new value and wall time, and the series' block summaries are recomputed where the
    points changed (see `series_blocks`). Returns the rows written.

    The hot path of ingest, driver-level SQL (no per-row ORM or Core compilation): on SQLite INSERT ... ON
    CONFLICT statements of many rows each (`_sqlite_upsert`); on PostgreSQL one statement whose rows come from
    arrays (`unnest`), adapted by psycopg's C dumpers in one go instead of one parameter set a row (about half the
    API's CPU for 100 rows). Either way the run and rank are one parameter each, not one a row.
    """
    if points:
        connection = connection_of(database)
        if connection.dialect.name == "postgresql":
            # one lock order for every writer: concurrent overlapping batches cannot deadlock
            keys, steps, values, specials, walls = zip(*sorted(points), strict=True)
            connection.exec_driver_sql(_PG_UPSERT_ARRAYS, (run_key, rank, list(keys), list(steps), list(values),
                                                           list(specials), list(walls)))
        else:
            _sqlite_upsert(connection, run_key, rank, points)
        series_blocks.record_written(connection, run_key, rank, points)
    return len(points)


_UPSERT_TAIL = ("ON CONFLICT (run_key, rank, key, step) DO UPDATE SET value = excluded.value, "
                "special = excluded.special, wall_time = excluded.wall_time")
# In array order (sorted above); unique (key, step)s, as ON CONFLICT DO UPDATE needs within one statement.
_PG_UPSERT_ARRAYS = ("INSERT INTO metric_points (run_key, rank, key, step, value, special, wall_time) "
                     "SELECT %s::integer, %s::integer, k, s, v, sp, w FROM unnest(%s::text[], %s::bigint[], "
                     "%s::float8[], %s::smallint[], %s::float8[]) WITH ORDINALITY AS t(k, s, v, sp, w, n) ORDER BY n "
                     + _UPSERT_TAIL)


@functools.lru_cache(maxsize=16)
def sqlite_upsert_sql(rows: int = 1) -> str:
    """SQLite's upsert of `rows` points of one series' run and rank: the parameters are the run key and rank once
    (?1, ?2, shared by every row), then each row's key, step, value, special and wall_time."""
    row = "(?1, ?2, ?, ?, ?, ?, ?)"
    return ("INSERT INTO metric_points (run_key, rank, key, step, value, special, wall_time) VALUES "
            f"{', '.join([row] * rows)} {_UPSERT_TAIL}")


#: the most rows one SQLite upsert statement carries (5 parameters each: far below SQLite's limit)
SQLITE_ROWS_PER_STATEMENT = 64


def _sqlite_upsert(connection: Any, run_key: int, rank: int, points: Sequence[PointRow]) -> None:
    """`points` in statements of 64, 32, ..., 1 rows (`upsert.value_runs`; 250 -> 200 us of SQLite for 100 rows
    against `executemany` of the one-row statement)."""
    for size, parameters in value_runs(points, SQLITE_ROWS_PER_STATEMENT, (run_key, rank)):
        connection.exec_driver_sql(sqlite_upsert_sql(size), parameters)


def experiment_points(session: Session, experiment_id: int, limit: int, offset: int, key: str | None = None,
                      run_id: str | None = None,
                      rank: int | None = None) -> tuple[list[tuple[str, int, str, int, float, float]], int]:
    """A page of (run_id, rank, key, step, value, wall_time) for an experiment's runs (of one rank when given),
    ordered by run, rank, key, step."""
    condition = [Run.experiment_id == experiment_id]
    if key is not None:
        condition.append(MetricPoint.key == key)
    if rank is not None:
        condition.append(MetricPoint.rank == rank)
    if run_id is not None:
        condition.append(Run.id == run_id)
    base = select(MetricPoint).join(Run, Run.key == MetricPoint.run_key).where(*condition)
    total = int(session.scalar(select(func.count()).select_from(base.subquery())) or 0)
    query = (select(Run.id, MetricPoint.rank, MetricPoint.key, MetricPoint.step, MetricPoint.value,
                    MetricPoint.special, MetricPoint.wall_time).join(Run, Run.key == MetricPoint.run_key)
             .where(*condition).order_by(Run.id, MetricPoint.rank, MetricPoint.key, MetricPoint.step)
             .limit(limit).offset(offset))
    rows = [(r, rk, k, s, decode_value(v, sp), w) for r, rk, k, s, v, sp, w in session.execute(query)]
    return rows, total


def experiment_keys(session: Session, experiment_id: int) -> list[str]:
    query = (select(MetricPoint.key).join(Run, Run.key == MetricPoint.run_key)
             .where(Run.experiment_id == experiment_id).distinct().order_by(MetricPoint.key))
    return list(session.scalars(query))
