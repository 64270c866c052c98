"""Runs: create (or join/resume), read, status, heartbeat, params, tags."""

from __future__ import annotations

import logging
import uuid

from fastapi import APIRouter, HTTPException, Response, status
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .. import auth, deps, errors
from ..db import utcnow
from ..deps import PrincipalDep, ReadableRun, SessionDep, SettingsDep, WritableRun
from ..models import Project, Run
from ..repositories import projects as project_repo
from ..repositories import runs as run_repo
from ..schemas import ParamsIn, RunCreate, RunOut, StatusChange, TagsIn
from ..services import lifecycle, limits
from ..settings import Settings
from .views import run_out

router = APIRouter(prefix="/api", tags=["runs"])
_LIMITS = "body over MAX_BODY_BYTES, or over MAX_TAGS_PER_RUN tags or MAX_PARAMS_BYTES of params"
log = logging.getLogger("trainmon.metadata_api.runs")


@router.post("/runs", response_model=RunOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": RunOut, "description": "the run exists already (another rank, or a resume)"},
                        409: errors.error("the run exists in another experiment of the project, or is COMPLETED"),
                        413: errors.error(_LIMITS)})
def create_run(body: RunCreate, session: SessionDep, principal: PrincipalDep, settings: SettingsDep,
               response: Response) -> RunOut:
    """Start a run of `experiment` (created on first use). An existing `run_id` is joined (DDP ranks) or resumed."""
    limits.check_json_size(body.params, settings)
    limits.check_tags(None, None, body.tags or {}, settings)
    try:
        return _create_or_join(body, session, principal, settings, response)
    except IntegrityError:
        # Another rank inserted the same new run_id between our read and our insert (PostgreSQL; SQLite writers
        # are serialised): start over, and this time join it.
        session.rollback()
        return _create_or_join(body, session, principal, settings, response)


def _create_or_join(body: RunCreate, session: Session, principal: auth.Principal, settings: Settings,
                    response: Response) -> RunOut:
    project_name = body.project
    if project_name is None:
        project_name = "default" if principal.open else _project_name(session, principal.project_id)
    if not principal.open:
        project = project_repo.find_project(session, project_name)
        if project is None or project.id != principal.project_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"project: this token cannot write to {project_name!r}")
        deps.require_access(principal, project.id, write=True)
    project = project_repo.get_or_create_project(session, project_name)
    experiment = project_repo.get_or_create_experiment(session, project, body.experiment)
    run_id = body.run_id or uuid.uuid4().hex
    found = run_repo.find_runs(session, run_id, project.id)  # run ids are unique per project only
    existing = found[0] if found else None
    if existing is not None:
        if existing.experiment_id != experiment.id:
            raise HTTPException(status.HTTP_409_CONFLICT,
                                f"run_id: run {run_id!r} belongs to experiment {existing.experiment.name!r}")
        run_repo.lock(session, existing)  # PostgreSQL: transitions see the latest status
        resumed = _resume(existing)
        _register_endpoint(session, existing, body)
        if body.context and existing.context is None:  # created without one (opted out, an older SDK)
            existing.context = body.context
        if body.tags:
            limits.check_tags(session, existing.key, body.tags, settings)
            run_repo.set_tags(session, existing.key, body.tags)
        answer = _commit_and_show(session, existing.key)
        if resumed:
            log.info("run resumed", extra={"experiment_id": experiment.id, "run_id": run_id})
        response.status_code = status.HTTP_200_OK
        return answer
    run = lifecycle.start(session, Run(
        id=run_id, project_id=project.id, experiment_id=experiment.id, host=body.host, pid=body.pid,
        command=body.command, git_commit=body.git_commit, rank=body.rank, world_size=body.world_size,
        exporter_url=body.exporter_url, params=body.params or {}, context=body.context))
    _register_endpoint(session, run, body)
    if body.tags:
        run_repo.set_tags(session, run.key, body.tags)
    answer = _commit_and_show(session, run.key)
    log.info("run started", extra={"experiment_id": experiment.id, "run_id": run_id})
    return answer


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run: ReadableRun) -> RunOut:
    return run_out(run)


@router.post("/runs/{run_id}/status", response_model=RunOut,
             responses={409: errors.error("illegal transition, or the run id exists in several "
                                                             "projects (give `project`)")})
def set_status(body: StatusChange, run: WritableRun, session: SessionDep) -> RunOut:
    run_repo.lock(session, run)  # PostgreSQL: concurrent transitions of one run take turns
    try:
        changed = lifecycle.change_status(run, body.status)
    except lifecycle.IllegalTransition as error:
        raise HTTPException(status.HTTP_409_CONFLICT, f"status: {error}") from error
    answer = _commit_and_show(session, run.key)
    if changed:
        log.info("run status %s", body.status.value,
                 extra={"experiment_id": run.experiment_id, "run_id": run.id})
    return answer


@router.put("/runs/{run_id}/params", response_model=RunOut, responses={413: errors.error(_LIMITS)})
def put_params(body: ParamsIn, run: WritableRun, session: SessionDep, settings: SettingsDep) -> RunOut:
    """Replace the run's hyperparameters (nested JSON kept as given)."""
    limits.check_json_size(body.params, settings)
    run_repo.set_params(run, body.params)
    return _commit_and_show(session, run.key)


@router.post("/runs/{run_id}/tags", response_model=RunOut, responses={413: errors.error(_LIMITS)})
def post_tags(body: TagsIn, run: WritableRun, session: SessionDep, settings: SettingsDep) -> RunOut:
    """Set tags (a key given again gets the new value; other tags stay)."""
    limits.check_tags(session, run.key, body.tags, settings)
    run_repo.set_tags(session, run.key, body.tags)
    return _commit_and_show(session, run.key)


def _register_endpoint(session: Session, run: Run, body: RunCreate) -> None:
    """Record this rank's exporter endpoint (a rank without a number is rank 0); the run's own `exporter_url`
    stays rank 0's, or the first one registered. A `world_size` drops the endpoints of ranks beyond it (an
    elastic resume with fewer ranks leaves no dead targets behind)."""
    rank = body.rank or 0
    if body.world_size is not None and rank < body.world_size:
        run_repo.drop_endpoints_from_rank(session, run.key, body.world_size)
    if body.exporter_url is None:
        return
    run_repo.register_endpoint(session, run.key, rank, body.exporter_url, body.host, utcnow())
    if rank == 0 or run.exporter_url is None:
        run.exporter_url = body.exporter_url


def _resume(run: Run) -> bool:
    try:
        return lifecycle.resume(run)
    except lifecycle.IllegalTransition as error:
        raise HTTPException(status.HTTP_409_CONFLICT, f"run_id: {error}") from error


def _commit_and_show(session: Session, run_key: int) -> RunOut:
    """The run as stored by this request (read inside its transaction), then commit."""
    session.flush()
    session.expire_all()
    run = run_repo.get_run(session, run_key)
    assert run is not None
    answer = run_out(run)
    session.commit()
    return answer


def _project_name(session: Session, project_id: int | None) -> str:
    project = session.get(Project, project_id)
    return project.name if project else "default"
