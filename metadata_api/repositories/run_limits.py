"""What the per-run limits count (`services.limits`): a run's tag keys, its number of notes."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..models import Note, RunTag


def tag_keys(session: Session, run_key: int) -> set[str]:
    """The keys of the run's tags (at most MAX_TAGS_PER_RUN of them)."""
    return set(session.scalars(select(RunTag.key).where(RunTag.run_key == run_key)))


def note_count(session: Session, run_key: int) -> int:
    return int(session.scalar(select(func.count()).select_from(Note).where(Note.run_key == run_key)) or 0)
