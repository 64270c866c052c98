"""Retention: metric points older than METRICS_RETENTION_DAYS (by their `wall_time`) are deleted.

Deletion runs in bounded batches, each its own short write transaction (PRUNE_BATCH_SIZE rows found through
the `wall_time` index), with a short pause between batches: on SQLite a writer waits for at most one batch,
never for the whole prune. Runs from `trainmon prune` and from a periodic job in the app (`retention_job`,
every RETENTION_INTERVAL_SECONDS).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ..models import MetricPoint

log = logging.getLogger("trainmon.metadata_api.retention")
SECONDS_PER_DAY = 86_400


def cutoff_time(retention_days: float, now: float | None = None) -> float:
    """The unix time before which points are pruned."""
    return (time.time() if now is None else now) - retention_days * SECONDS_PER_DAY


def prune_metric_points(write_sessions: Callable[[], Session], retention_days: float, batch_size: int,
                        now: float | None = None, pause_seconds: float = 0.01) -> int:
    """Delete points with `wall_time` older than `retention_days`, `batch_size` rows a transaction; the count."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    cutoff = cutoff_time(retention_days, now)
    deleted = 0
    while True:
        with write_sessions() as session:
            ids = list(session.scalars(select(MetricPoint.id).where(MetricPoint.wall_time < cutoff)
                                       .limit(batch_size)))
            if ids:
                session.execute(delete(MetricPoint).where(MetricPoint.id.in_(ids)))
            session.commit()
        deleted += len(ids)
        if len(ids) < batch_size:
            return deleted
        time.sleep(pause_seconds)  # let queued writers take the lock between batches


async def retention_job(app: Any) -> None:
    """Every RETENTION_INTERVAL_SECONDS, prune old metric points (errors are counted and logged, never fatal)."""
    settings = app.state.settings
    while True:
        await asyncio.sleep(settings.retention_interval_seconds)
        try:
            deleted = await asyncio.to_thread(prune_metric_points, app.state.write_sessions,
                                              settings.metrics_retention_days, settings.prune_batch_size)
        except SQLAlchemyError as error:
            app.state.metrics.db_errors.inc()
            log.warning("retention prune failed: %s", error)
            continue
        if deleted:
            log.info("pruned %d metric points older than %s days", deleted, settings.metrics_retention_days)
