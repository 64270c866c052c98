"""What the dashboard reads of one run besides its series: metric keys, log lines (filtered, searched, followed),
checkpoints and artifacts, and the new points and log lines since a cursor (the live events).

Every read is an index range scan bounded by the run: keys by a skip scan of `metric_blocks` (one seek a key),
log lines by `(run_key, time)`, new rows by the primary key (`id > cursor`, only rows written since).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from ..models import Artifact, Checkpoint, LogLine, MetricPoint, Note
from .run_table import like_pattern

MAX_KEYS = 10_000
LEVEL_ORDER = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Loose index scans: the next key (rank) after each one, one seek into the (run_key, rank, key, block) primary key
# each.
_KEYS = text("""
WITH RECURSIVE keys(key) AS (
    SELECT MIN(key) FROM metric_blocks WHERE run_key = :run AND rank = :rank
    UNION ALL
    SELECT (SELECT MIN(b.key) FROM metric_blocks b WHERE b.run_key = :run AND b.rank = :rank AND b.key > keys.key)
    FROM keys WHERE keys.key IS NOT NULL
)
SELECT key FROM keys WHERE key IS NOT NULL LIMIT :limit
""")
_RANKS = text("""
WITH RECURSIVE ranks(rank) AS (
    SELECT MIN(rank) FROM metric_blocks WHERE run_key = :run
    UNION ALL
    SELECT (SELECT MIN(b.rank) FROM metric_blocks b WHERE b.run_key = :run AND b.rank > ranks.rank)
    FROM ranks WHERE ranks.rank IS NOT NULL
)
SELECT rank FROM ranks WHERE rank IS NOT NULL LIMIT :limit
""")
MAX_RANKS = 100_000


def metric_keys(session: Session, run_key: int, rank: int = 0) -> list[str]:
    """The metric keys of one rank of the run, in order (at most MAX_KEYS)."""
    return [key for (key,) in session.execute(_KEYS, {"run": run_key, "rank": rank, "limit": MAX_KEYS})]


def metric_ranks(session: Session, run_key: int) -> list[int]:
    """The ranks that logged points to the run, in order."""
    return [int(rank) for (rank,) in session.execute(_RANKS, {"run": run_key, "limit": MAX_RANKS})]


def log_lines(session: Session, run_key: int, level: str | None = None, search: str | None = None,
              after_id: int | None = None, limit: int = 500, tail: bool = False) -> list[LogLine]:
    """The run's log lines in time order: at `level` or above, containing `search` (case-insensitive), after the
    line `after_id` (following a log); with `tail`, the last `limit` lines instead of the first."""
    query = select(LogLine).where(LogLine.run_key == run_key)
    if level is not None and level in LEVEL_ORDER:
        query = query.where(LogLine.level.in_(LEVEL_ORDER[LEVEL_ORDER.index(level):]))
    if search:
        query = query.where(LogLine.message.ilike(like_pattern(search), escape="\\"))
    if after_id is not None:
        query = query.where(LogLine.id > after_id)
    if tail:
        lines = list(session.scalars(query.order_by(LogLine.time.desc(), LogLine.id.desc()).limit(limit)))
        return lines[::-1]
    return list(session.scalars(query.order_by(LogLine.time, LogLine.id).limit(limit)))


def notes(session: Session, run_key: int, limit: int = 200) -> list[Note]:
    return list(session.scalars(select(Note).where(Note.run_key == run_key).order_by(Note.created_at, Note.id)
                                .limit(limit)))


def checkpoints(session: Session, run_key: int, limit: int = 500) -> list[Checkpoint]:
    query = select(Checkpoint).where(Checkpoint.run_key == run_key)
    return list(session.scalars(query.order_by(Checkpoint.step.desc().nulls_last(), Checkpoint.id.desc())
                                .limit(limit)))


def artifacts(session: Session, run_key: int, limit: int = 2000) -> list[Artifact]:
    """The run's artifacts by kind, name and step (at most `limit`)."""
    query = select(Artifact).where(Artifact.run_key == run_key)
    return list(session.scalars(query.order_by(Artifact.kind, Artifact.name, Artifact.step, Artifact.id)
                                .limit(limit)))


# --- live events ---------------------------------------------------------------------------------------------


def cursor_now(session: Session) -> tuple[int, int]:
    """The newest metric point id and log line id (primary-key maxima): what exists before a page is shown."""
    points = session.scalar(select(func.max(MetricPoint.id))) or 0
    lines = session.scalar(select(func.max(LogLine.id))) or 0
    return int(points), int(lines)


def _recent(model: type[MetricPoint] | type[LogLine], after_id: int, scan: int) -> Any:
    """The `scan` rows written first after row `after_id` (every run's): a primary-key range scan, whatever the
    planner thinks of the run's own index, so a poll costs the rows written since the last one, never a run's
    whole history."""
    return select(model).where(model.id > after_id).order_by(model.id).limit(scan).subquery()


def points_since(session: Session, run_key: int, after_id: int, scan: int) -> tuple[list[Sequence], int, int]:
    """(id, rank, key, step, value, special, wall_time) of the run's points among the `scan` points written after
    point `after_id`, in id order; the id to continue after (the last one scanned) and how many were scanned."""
    recent = _recent(MetricPoint, after_id, scan)
    rows = list(session.execute(select(recent.c.id, recent.c.rank, recent.c.key, recent.c.step, recent.c.value,
                                       recent.c.special, recent.c.wall_time).where(recent.c.run_key == run_key)
                                .order_by(recent.c.id)))
    return (rows, *_scanned(session, recent, after_id))


def _scanned(session: Session, recent: Any, after_id: int) -> tuple[int, int]:
    last, count = session.execute(select(func.max(recent.c.id), func.count())).one()
    return (int(last) if last is not None else after_id), int(count)


def lines_since(session: Session, run_key: int, after_id: int,
                scan: int) -> tuple[list[tuple[int, datetime, str, str]], int, int]:
    """Like `points_since`, for log lines: (id, time, level, message)."""
    recent = _recent(LogLine, after_id, scan)
    rows = [tuple(row) for row in session.execute(
        select(recent.c.id, recent.c.time, recent.c.level, recent.c.message).where(recent.c.run_key == run_key)
        .order_by(recent.c.id))]
    return (rows, *_scanned(session, recent, after_id))  # type: ignore[return-value]
