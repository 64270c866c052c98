"""Checkpoints: registration (upsert by run and name), lookups, a run's and an experiment's pages, stored files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..db import utcnow
from ..models import Checkpoint, Run
from .records import paginate, paginate_rows


def upsert(session: Session, run_key: int, fields: Mapping[str, Any]) -> tuple[Checkpoint, bool]:
    """Register a checkpoint; a name the run registered before gets the new fields and time (a re-save). A new
    `sha256` forgets the stored file (`path`): the registration describes other bytes now (the old file stays
    until the new one's upload replaces it). True when the name is new."""
    checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.run_key == run_key,
                                                         Checkpoint.name == fields["name"]))
    created = checkpoint is None
    if checkpoint is None:
        checkpoint = Checkpoint(run_key=run_key)
        session.add(checkpoint)
    elif checkpoint.sha256 != fields["sha256"]:
        checkpoint.path = None
    checkpoint.created_at = utcnow()
    for name, value in fields.items():
        setattr(checkpoint, name, value)
    session.flush()
    return checkpoint, created


def get(session: Session, run_key: int, checkpoint_id: int, for_update: bool = False) -> Checkpoint | None:
    """The run's checkpoint `checkpoint_id` (locked until the transaction ends with `for_update`, PostgreSQL)."""
    query = select(Checkpoint).where(Checkpoint.run_key == run_key, Checkpoint.id == checkpoint_id)
    return session.scalar(query.with_for_update() if for_update else query)


def of_run(session: Session, run_key: int, limit: int, offset: int, name: str | None = None,
           step: int | None = None) -> tuple[list[Checkpoint], int]:
    """A page of the run's checkpoints, newest (last registered) first; filter by name and step."""
    query = select(Checkpoint).where(Checkpoint.run_key == run_key)
    if name is not None:
        query = query.where(Checkpoint.name == name)
    if step is not None:
        query = query.where(Checkpoint.step == step)
    return paginate(session, query.order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc()), limit, offset)


def of_experiment(session: Session, experiment_id: int, limit: int, offset: int,
                  run_id: str | None = None) -> tuple[list[tuple[Checkpoint, str]], int]:
    """A page of an experiment's (checkpoint, run id), newest first; filter by run id."""
    query = (select(Checkpoint, Run.id).join(Run, Run.key == Checkpoint.run_key)
             .where(Run.experiment_id == experiment_id))
    if run_id is not None:
        query = query.where(Run.id == run_id)
    return paginate_rows(session, query.order_by(Checkpoint.created_at.desc(), Checkpoint.id.desc()), limit, offset)
