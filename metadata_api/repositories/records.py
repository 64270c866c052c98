"""A run's notes and log lines, an experiment's log lines (paginated), and the pagination helpers."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..db import connection_of, datetime_codec, param_mark, utcnow
from ..models import LogLine, Note, Run


def add_note(session: Session, run_key: int, text: str) -> Note:
    note = Note(run_key=run_key, text=text, created_at=utcnow())
    session.add(note)
    session.flush()
    return note


def notes_of_run(session: Session, run_key: int, limit: int, offset: int) -> tuple[list[Note], int]:
    return paginate(session, select(Note).where(Note.run_key == run_key).order_by(Note.created_at, Note.id), limit,
                 offset)


def add_log_lines(database: Session | Any, run_key: int, lines: Sequence[tuple[datetime, str, str]]) -> int:
    """Insert (time, level, message) lines with one driver-level executemany; returns how many."""
    if lines:
        connection = connection_of(database)
        mark = param_mark(connection)
        encode_time = datetime_codec(connection.dialect)[0]
        connection.exec_driver_sql(
            f"INSERT INTO log_lines (run_key, time, level, message) VALUES ({mark}, {mark}, {mark}, {mark})",
            [(run_key, encode_time(time), level, message) for time, level, message in lines])
    return len(lines)


def experiment_log_lines(session: Session, experiment_id: int, limit: int, offset: int, run_id: str | None = None,
                         level: str | None = None) -> tuple[list[tuple[LogLine, str]], int]:
    """A page of an experiment's (log line, run id) in time order; filter by run id and level."""
    query = select(LogLine, Run.id).join(Run, Run.key == LogLine.run_key).where(Run.experiment_id == experiment_id)
    if run_id is not None:
        query = query.where(Run.id == run_id)
    if level is not None:
        query = query.where(LogLine.level == level)
    return paginate_rows(session, query.order_by(LogLine.time, LogLine.id), limit, offset)


def paginate(session: Session, query: Select, limit: int, offset: int) -> tuple[list[Any], int]:
    """A page of the first column's values (the ORM rows of `select(Model)`), and the total count."""
    total = int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    return list(session.scalars(query.limit(limit).offset(offset))), total


def paginate_rows(session: Session, query: Select, limit: int, offset: int) -> tuple[list[Any], int]:
    """A page of whole rows (tuples) of `query`, and the total count."""
    total = int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    return [tuple(row) for row in session.execute(query.limit(limit).offset(offset))], total
