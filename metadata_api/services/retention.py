"""Retention: metric points older than METRICS_RETENTION_DAYS (by their `wall_time`) are deleted, and so are the
ingest idempotency records (`ingest_batches`, by their `created_at`) older than the same window (a batch replayed
after that long is stored again; its points are upserted by their natural key, so nothing doubles).

Deletion runs in bounded batches, each its own short write transaction (PRUNE_BATCH_SIZE rows; old points are found
through their blocks' `min_wall_time` index, which ingest keeps exact, so points need no index of their own on
`wall_time`; old records through the `created_at` index), with a short pause between batches: on SQLite a writer
waits for at most one batch, never for the whole prune. The block summaries of the series that lost points
(`repositories.series_blocks`) are recomputed in the same transaction. Runs from `trainmon prune` and from a
periodic job in the app (`retention_job`, every RETENTION_INTERVAL_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sqlalchemy import Select, and_, delete, select, text, tuple_
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models import IngestBatch, MetricBlock, MetricPoint
from ..repositories import series_blocks
from ..repositories.series_blocks import BLOCK_STEPS

log = logging.getLogger("trainmon.metadata_api.retention")
SECONDS_PER_DAY = 86_400


def cutoff_time(retention_days: float, now: float | None = None) -> float:
    """The unix time before which points are pruned."""
    return (time.time() if now is None else now) - retention_days * SECONDS_PER_DAY


class Pruned(NamedTuple):
    """How many rows one retention pass deleted."""

    metric_points: int
    ingest_batches: int


def old_points(cutoff: float, limit: int) -> Select[Any]:
    """(id, run_key, rank, key, step) of at most `limit` points with `wall_time` before `cutoff`: the oldest
    blocks (by `min_wall_time`, through its index), at most `limit` of them, then their old points through the
    points' unique index. Each such block holds at least one old point, so `limit` blocks hold at least `limit`
    old points whenever that many exist: a short answer means there are no more."""
    blocks = (select(MetricBlock.run_key, MetricBlock.rank, MetricBlock.key, MetricBlock.block)
              .where(MetricBlock.min_wall_time < cutoff).order_by(MetricBlock.min_wall_time).limit(limit)
              .subquery("old_blocks"))
    first_step = blocks.c.block * BLOCK_STEPS
    in_block = and_(MetricPoint.run_key == blocks.c.run_key, MetricPoint.rank == blocks.c.rank,
                    MetricPoint.key == blocks.c.key,
                    MetricPoint.step.between(first_step, first_step + (BLOCK_STEPS - 1)))
    return (select(MetricPoint.id, MetricPoint.run_key, MetricPoint.rank, MetricPoint.key, MetricPoint.step)
            .select_from(blocks).join(MetricPoint, in_block).where(MetricPoint.wall_time < cutoff).limit(limit))


def block_by_block(session: Session) -> None:
    """PostgreSQL: plan `old_points` as a loop over the blocks with an index range read each (its estimates can
    make a hash or merge join over the whole points table look cheaper: a full scan per batch). Transaction-local."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SET LOCAL enable_hashjoin = off"))
        session.execute(text("SET LOCAL enable_mergejoin = off"))


def prune_metric_points(write_sessions: Callable[[], Session], retention_days: float, batch_size: int,
                        now: float | None = None, pause_seconds: float = 0.01) -> int:
    """Delete points with `wall_time` older than `retention_days`, `batch_size` rows a transaction; the count."""
    cutoff = cutoff_time(retention_days, now)

    def delete_batch(session: Session) -> int:
        block_by_block(session)
        rows = session.execute(old_points(cutoff, batch_size)).all()
        if rows:
            session.execute(delete(MetricPoint).where(MetricPoint.id.in_([row.id for row in rows])))
            _refresh_blocks(session, rows)
        return len(rows)

    return _delete_in_batches(write_sessions, delete_batch, batch_size, pause_seconds)


def _refresh_blocks(session: Session, rows: Sequence[Any]) -> None:
    """Recompute the block summaries of the series the deleted points belonged to (same transaction)."""
    by_run: dict[int, list[tuple[int, str, int]]] = {}
    for row in rows:
        by_run.setdefault(row.run_key, []).append((row.rank, row.key, row.step))
    series_blocks.refresh_blocks(session.connection(), [block for run_key, points in sorted(by_run.items())
                                                        for block in series_blocks.affected_blocks(run_key, points)])


def prune_ingest_batches(write_sessions: Callable[[], Session], retention_days: float, batch_size: int,
                         now: float | None = None, pause_seconds: float = 0.01) -> int:
    """Delete idempotency records created more than `retention_days` ago, `batch_size` a transaction; the count."""
    cutoff = datetime.fromtimestamp(cutoff_time(retention_days, now), timezone.utc)
    key = (IngestBatch.run_key, IngestBatch.kind, IngestBatch.batch_id)

    def delete_batch(session: Session) -> int:
        keys: Sequence[Any] = session.execute(select(*key).where(IngestBatch.created_at < cutoff)
                                              .limit(batch_size)).all()
        if keys:
            session.execute(delete(IngestBatch).where(tuple_(*key).in_([tuple(row) for row in keys])))
        return len(keys)

    return _delete_in_batches(write_sessions, delete_batch, batch_size, pause_seconds)


def prune(write_sessions: Callable[[], Session], retention_days: float, batch_size: int,
          now: float | None = None, pause_seconds: float = 0.01) -> Pruned:
    """One retention pass: old metric points, then old ingest records."""
    return Pruned(prune_metric_points(write_sessions, retention_days, batch_size, now, pause_seconds),
                  prune_ingest_batches(write_sessions, retention_days, batch_size, now, pause_seconds))


def _delete_in_batches(write_sessions: Callable[[], Session], delete_batch: Callable[[Session], int],
                       batch_size: int, pause_seconds: float) -> int:
    """Run `delete_batch` (deletes at most `batch_size` rows; their count) in its own transaction until a batch
    comes back short; the total."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    deleted = 0
    while True:
        with write_sessions() as session:
            count = delete_batch(session)
            session.commit()
        deleted += count
        if count < batch_size:
            return deleted
        time.sleep(pause_seconds)  # let queued writers take the lock between batches


async def retention_job(app: Any) -> None:
    """Every RETENTION_INTERVAL_SECONDS, prune old metric points and ingest records (errors are counted and
    logged, never fatal)."""
    settings = app.state.settings
    while True:
        await asyncio.sleep(settings.retention_interval_seconds)
        if not await asyncio.to_thread(app.state.jobs_lock.acquire):
            continue  # another replica runs the background jobs
        try:
            pruned = await asyncio.to_thread(prune, app.state.write_sessions, settings.metrics_retention_days,
                                             settings.prune_batch_size)
        except SQLAlchemyError as error:
            app.state.telemetry.db_errors.inc()
            log.warning("retention prune failed: %s", error)
            continue
        if any(pruned):
            log.info("pruned %d metric points and %d ingest records older than %s days", pruned.metric_points,
                     pruned.ingest_batches, settings.metrics_retention_days)
