"""Runs, their tags and params. A run is found by its key (internal), or by its client id within a project
(`find_runs`; the rules of which project are `deps.resolve_run`'s)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import bindparam, delete, func, select
from sqlalchemy.orm import Session, joinedload, selectinload

from ..db import connection_of, datetime_codec, param_mark
from ..models import Experiment, Run, RunEndpoint, RunStatus, RunTag
from .upsert import upsert_many


def _full() -> tuple:
    return (selectinload(Run.tags), selectinload(Run.endpoints),
            selectinload(Run.experiment).selectinload(Experiment.project))


def get_run(session: Session, key: int) -> Run | None:
    """The run of key `key` with its tags, endpoints, experiment and project."""
    return session.scalar(select(Run).where(Run.key == key).options(*_full()))


def _runs_by_id(in_project: bool, for_write: bool) -> Any:
    query = select(Run).where(Run.id == bindparam("run_id"))
    if in_project:
        query = query.where(Run.project_id == bindparam("project_id"))
    options = (joinedload(Run.experiment),) if for_write else _full()
    return query.order_by(Run.key).options(*options)


# Built once: every request on a run path looks its run up (statement construction costs more than the query).
_RUNS_BY_ID = {(in_project, for_write): _runs_by_id(in_project, for_write)
               for in_project in (False, True) for for_write in (False, True)}


def find_runs(session: Session, run_id: str, project_id: int | None = None, for_write: bool = False) -> list[Run]:
    """The runs with client id `run_id` (in `project_id` when given: at most one), by key. For a write only the
    run and its experiment are loaded (what the access check needs), in one query."""
    query = _RUNS_BY_ID[(project_id is not None, for_write)]
    return list(session.scalars(query, {"run_id": run_id, "project_id": project_id}))


class RunRef(NamedTuple):
    """What a write that needs only a run's identity and liveness reads of it (metric ingest, its hot path)."""

    key: int
    project_id: int
    status: str
    last_heartbeat: datetime


def find_run_refs(database: Session | Any, run_id: str, project_id: int | None = None) -> list[RunRef]:
    """`find_runs` as `RunRef`s, on any connection (driver-level SQL: no statement to build, no entity)."""
    connection = connection_of(database)
    mark = param_mark(connection)
    sql = f"SELECT key, project_id, status, last_heartbeat FROM runs WHERE id = {mark}"
    parameters: tuple = (run_id,)
    if project_id is not None:
        sql += f" AND project_id = {mark}"
        parameters = (run_id, project_id)
    from_driver = datetime_codec(connection.dialect)[1]
    return [RunRef(key, project, status, from_driver(heartbeat))
            for key, project, status, heartbeat in connection.exec_driver_sql(sql + " ORDER BY key", parameters)]


def lock(session: Session, run: Run) -> None:
    """Lock the run's row until the transaction ends and reload it (PostgreSQL `FOR UPDATE`; SQLite writers hold
    the database lock already), so that a status transition is checked against the latest status."""
    session.execute(select(Run.key).where(Run.key == run.key).with_for_update(key_share=True))  # NO KEY UPDATE
    session.refresh(run)


def runs_of_experiment(session: Session, experiment_id: int, limit: int | None = None,
                       offset: int = 0) -> list[Run]:
    """The experiment's runs in start order (a page of them when `limit` is given)."""
    query = select(Run).where(Run.experiment_id == experiment_id).order_by(Run.start_time, Run.id).options(*_full())
    if limit is not None:
        query = query.limit(limit).offset(offset)
    return list(session.scalars(query))


def running_runs_with_endpoints(session: Session) -> list[Run]:
    """RUNNING runs that have at least one registered exporter endpoint, with their endpoints (rank order)."""
    has_endpoint = select(RunEndpoint.run_key).where(RunEndpoint.run_key == Run.key).exists()
    query = select(Run).where(Run.status == RunStatus.RUNNING.value, has_endpoint).order_by(Run.id, Run.key).options(
        selectinload(Run.endpoints), selectinload(Run.experiment).selectinload(Experiment.project))
    return list(session.scalars(query))


def register_endpoint(session: Session, run_key: int, rank: int, url: str, host: str | None, now: datetime) -> None:
    """Record (or replace) the exporter endpoint of one rank of a run."""
    row = {"run_key": run_key, "rank": rank, "url": url, "host": host, "updated_at": now}
    upsert_many(session, RunEndpoint.__table__, [row], ["run_key", "rank"], ["url", "host", "updated_at"])


def drop_endpoints_from_rank(session: Session, run_key: int, first_rank: int) -> None:
    """Forget the endpoints of ranks >= `first_rank` (a run resumed with a smaller world)."""
    session.execute(delete(RunEndpoint).where(RunEndpoint.run_key == run_key, RunEndpoint.rank >= first_rank)
                    .execution_options(synchronize_session=False))


def drop_endpoint(session: Session, run_key: int, rank: int) -> bool:
    """Forget one rank's endpoint (a rank that finished leaves discovery); whether there was one."""
    result = session.execute(delete(RunEndpoint).where(RunEndpoint.run_key == run_key, RunEndpoint.rank == rank)
                             .execution_options(synchronize_session=False))
    return bool(result.rowcount)


def add_run(session: Session, run: Run) -> Run:
    session.add(run)
    session.flush()
    return run


def set_tags(session: Session, run_key: int, tags: Mapping[str, str]) -> None:
    rows = [{"run_key": run_key, "key": key, "value": value} for key, value in sorted(tags.items())]  # lock order
    upsert_many(session, RunTag.__table__, rows, ["run_key", "key"], ["value"])


def touch_heartbeat(database: Session | Any, run_key: int, now: datetime, only_running: bool = False) -> bool:
    """Set the run's `last_heartbeat` to `now` (`only_running`: only while it is RUNNING, checked by the UPDATE
    itself, so a concurrent status change wins); whether a row was updated."""
    connection = connection_of(database)
    mark = param_mark(connection)
    condition = f" AND status = '{RunStatus.RUNNING.value}'" if only_running else ""
    result = connection.exec_driver_sql(f"UPDATE runs SET last_heartbeat = {mark} WHERE key = {mark}{condition}",
                                        (datetime_codec(connection.dialect)[0](now), run_key))
    return result.rowcount == 1


def set_params(run: Run, params: dict[str, Any]) -> None:
    run.params = params


def count_by_status(session: Session) -> dict[str, int]:
    return {status: int(count) for status, count in
            session.execute(select(Run.status, func.count()).group_by(Run.status))}


def has_stale_running(session: Session, cutoff: datetime) -> bool:
    """Whether some RUNNING run's last heartbeat is older than `cutoff` (an index lookup)."""
    query = select(Run.key).where(Run.status == RunStatus.RUNNING.value, Run.last_heartbeat < cutoff).limit(1)
    return session.scalar(query) is not None


def stale_running_for_update(session: Session, cutoff: datetime) -> list[Run]:
    """RUNNING runs whose last heartbeat is older than `cutoff`, in key order, locked until the transaction ends
    (PostgreSQL `FOR NO KEY UPDATE`: a heartbeat committed meanwhile takes the run out of the result; SQLite
    writers hold the database lock already)."""
    query = (select(Run).where(Run.status == RunStatus.RUNNING.value, Run.last_heartbeat < cutoff)
             .order_by(Run.key).with_for_update(key_share=True))
    return list(session.scalars(query))
