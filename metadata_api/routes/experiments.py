"""Experiments with their runs, and an experiment's metric points (paginated); `Limit`/`Offset` are the
pagination parameters every listing uses."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ..deps import CrashDetectorDep, PrincipalDep, ReadableExperiment, SessionDep
from ..models import Experiment
from ..repositories import points as point_repo
from ..repositories import projects as project_repo
from ..repositories import runs as run_repo
from ..schemas import (
    INT64_MAX,
    ExperimentDetail,
    ExperimentMetrics,
    ExperimentOut,
    MetricKey,
    Page,
    PointOut,
    RankQuery,
    RunId,
)
from .views import run_out

router = APIRouter(prefix="/api", tags=["experiments"])
Limit = Annotated[int, Query(ge=1, le=1000)]
PointLimit = Annotated[int, Query(ge=1, le=100_000)]
Offset = Annotated[int, Query(ge=0, le=INT64_MAX)]


@router.get("/experiments", response_model=Page[ExperimentOut])
def list_experiments(session: SessionDep, principal: PrincipalDep, crashes: CrashDetectorDep, limit: Limit = 50,
                     offset: Offset = 0) -> Page[ExperimentOut]:
    """Experiments, newest first (only the token's project when a token is used)."""
    crashes.refresh_stale_runs(session)
    experiments, total = project_repo.list_experiments(session, limit, offset, principal.project_id)
    stats = project_repo.run_stats(session, [e.id for e in experiments])
    items = [_experiment_out(e, *stats[e.id]) for e in experiments]
    return Page[ExperimentOut](items=items, total=total, limit=limit, offset=offset)


@router.get("/experiments/{experiment_id}", response_model=ExperimentDetail)
def get_experiment(experiment: ReadableExperiment, session: SessionDep, crashes: CrashDetectorDep,
                   limit: Limit = 1000, offset: Offset = 0) -> ExperimentDetail:
    """One experiment with its runs in start order (status, params, tags), `limit` runs from `offset`."""
    runs = run_repo.runs_of_experiment(session, experiment.id, limit, offset)
    if crashes.refresh_if_stale(session, runs):
        runs = run_repo.runs_of_experiment(session, experiment.id, limit, offset)
    stats = project_repo.run_stats(session, [experiment.id])[experiment.id]
    summary = _experiment_out(experiment, *stats)
    return ExperimentDetail(**summary.model_dump(), runs=[run_out(run) for run in runs], limit=limit, offset=offset)


@router.get("/metrics/{experiment_id}", response_model=ExperimentMetrics)
def experiment_metrics(experiment: ReadableExperiment, session: SessionDep, limit: PointLimit = 10_000,
                       offset: Offset = 0, key: MetricKey | None = None,
                       run_id: RunId | None = None, rank: RankQuery | None = None) -> ExperimentMetrics:
    """The experiment's metric points ordered by run, rank, key and step; filter by `key`, `run_id` and `rank`."""
    rows, total = point_repo.experiment_points(session, experiment.id, limit, offset, key, run_id, rank)
    items = [PointOut(run_id=r, rank=rk, key=k, step=s, value=v, wall_time=w) for r, rk, k, s, v, w in rows]
    return ExperimentMetrics(experiment_id=experiment.id, keys=point_repo.experiment_keys(session, experiment.id),
                             items=items, total=total, limit=limit, offset=offset)


def _experiment_out(experiment: Experiment, by_status: dict[str, int], last_activity: object) -> ExperimentOut:
    return ExperimentOut(id=experiment.id, name=experiment.name, project=experiment.project.name,
                         description=experiment.description, created_at=experiment.created_at,
                         run_count=sum(by_status.values()), runs_by_status=by_status,
                         last_activity=last_activity)
