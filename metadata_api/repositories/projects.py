"""Projects and experiments (get-or-create is safe under concurrent creators)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..db import connection_of, param_mark, utcnow
from ..models import Experiment, Project, Run
from .upsert import insert_ignore


def get_or_create_project(session: Session, name: str) -> Project:
    project = session.scalar(select(Project).where(Project.name == name))
    if project is None:
        insert_ignore(session, Project.__table__, {"name": name, "created_at": utcnow()}, ["name"])
        project = session.scalar(select(Project).where(Project.name == name))
    assert project is not None
    return project


def find_project(session: Session, name: str) -> Project | None:
    return session.scalar(select(Project).where(Project.name == name))


def project_id_of(database: Session | Any, name: str) -> int | None:
    """The id of the project named `name` (None: no such project), on any connection (driver-level SQL)."""
    connection = connection_of(database)
    return connection.exec_driver_sql(f"SELECT id FROM projects WHERE name = {param_mark(connection)}",
                                      (name,)).scalar()


def get_or_create_experiment(session: Session, project: Project, name: str) -> Experiment:
    query = select(Experiment).where(Experiment.project_id == project.id, Experiment.name == name)
    experiment = session.scalar(query)
    if experiment is None:
        insert_ignore(session, Experiment.__table__,
                      {"project_id": project.id, "name": name, "created_at": utcnow()}, ["project_id", "name"])
        experiment = session.scalar(query)
    assert experiment is not None
    return experiment


def get_experiment(session: Session, experiment_id: int) -> Experiment | None:
    return session.get(Experiment, experiment_id)


def list_experiments(session: Session, limit: int, offset: int,
                     project_id: int | None = None) -> tuple[list[Experiment], int]:
    """A page of experiments, newest first, and the total count."""
    query = select(Experiment)
    count = select(func.count()).select_from(Experiment)
    if project_id is not None:
        query = query.where(Experiment.project_id == project_id)
        count = count.where(Experiment.project_id == project_id)
    rows = session.scalars(query.order_by(Experiment.id.desc()).limit(limit).offset(offset)).all()
    return list(rows), int(session.scalar(count) or 0)


def run_stats(session: Session, experiment_ids: list[int]) -> dict[int, tuple[dict[str, int], datetime | None]]:
    """Per experiment: runs by status and the latest run start or heartbeat."""
    stats: dict[int, tuple[dict[str, int], datetime | None]] = {eid: ({}, None) for eid in experiment_ids}
    if not experiment_ids:
        return stats
    rows = session.execute(
        select(Run.experiment_id, Run.status, func.count(), func.max(Run.last_heartbeat))
        .where(Run.experiment_id.in_(experiment_ids)).group_by(Run.experiment_id, Run.status))
    for experiment_id, status, count, last in rows:
        by_status, latest = stats[experiment_id]
        by_status[status] = int(count)
        last = _as_utc(last)
        stats[experiment_id] = (by_status, max(filter(None, (latest, last)), default=None))
    return stats


def _as_utc(value: datetime | str | None) -> datetime | None:
    # MAX() over a SQLite text column comes back as text, bypassing the column type.
    if isinstance(value, str):
        return datetime.fromisoformat(value).replace(tzinfo=timezone.utc)
    return value
