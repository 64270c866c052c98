"""A run's notes, log lines and checkpoints, and an experiment's log lines and checkpoints (paginated)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Checkpoint, LogLine, Note, Run


def add_note(session: Session, run_id: str, text: str) -> Note:
    note = Note(run_id=run_id, text=text, created_at=utcnow())
    session.add(note)
    session.flush()
    return note


def notes_of_run(session: Session, run_id: str, limit: int, offset: int) -> tuple[list[Note], int]:
    return paginate(session, select(Note).where(Note.run_id == run_id).order_by(Note.created_at, Note.id), limit,
                 offset)


def add_log_lines(session: Session, run_id: str, lines: Sequence[tuple[datetime, str, str]]) -> int:
    """Insert (time, level, message) lines in one statement; returns how many."""
    if lines:
        session.execute(LogLine.__table__.insert(), [
            {"run_id": run_id, "time": time, "level": level, "message": message} for time, level, message in lines])
    return len(lines)


def experiment_log_lines(session: Session, experiment_id: int, limit: int, offset: int, run_id: str | None = None,
                         level: str | None = None) -> tuple[list[LogLine], int]:
    """A page of an experiment's log lines in time order; filter by run and level."""
    query = select(LogLine).join(Run, Run.id == LogLine.run_id).where(Run.experiment_id == experiment_id)
    if run_id is not None:
        query = query.where(LogLine.run_id == run_id)
    if level is not None:
        query = query.where(LogLine.level == level)
    return paginate(session, query.order_by(LogLine.time, LogLine.id), limit, offset)


def upsert_checkpoint(session: Session, run_id: str, fields: Mapping[str, Any]) -> tuple[Checkpoint, bool]:
    """Register a checkpoint; a name the run registered before gets the new fields and time (a re-save).
    True when the name is new."""
    checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.run_id == run_id,
                                                         Checkpoint.name == fields["name"]))
    created = checkpoint is None
    if checkpoint is None:
        checkpoint = Checkpoint(run_id=run_id)
        session.add(checkpoint)
    checkpoint.created_at = utcnow()
    for name, value in fields.items():
        setattr(checkpoint, name, value)
    session.flush()
    return checkpoint, created


def experiment_checkpoints(session: Session, experiment_id: int, limit: int, offset: int,
                           run_id: str | None = None) -> tuple[list[Checkpoint], int]:
    """A page of an experiment's checkpoints, newest first."""
    query = select(Checkpoint).join(Run, Run.id == Checkpoint.run_id).where(Run.experiment_id == experiment_id)
    if run_id is not None:
        query = query.where(Checkpoint.run_id == run_id)
    return paginate(session, query.order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc()), limit, offset)


def paginate(session: Session, query: Select, limit: int, offset: int) -> tuple[list[Any], int]:
    total = int(session.scalar(select(func.count()).select_from(query.order_by(None).subquery())) or 0)
    return list(session.scalars(query.limit(limit).offset(offset))), total
