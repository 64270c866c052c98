"""Typed request dependencies: settings, the DB session (one transaction per request), the API's telemetry, the
crash detector, who is calling, and the run or experiment a path names, already checked for existence (404) and
access (401/403); a run read this way has been through crash detection (`services.lifecycle.CrashDetector`).

Sessions: requests that only read (GET/HEAD) get a read session; others a write session (BEGIN IMMEDIATE on
SQLite). Nothing commits unless the route calls `session.commit()` before answering; anything else (an
exception, a 4xx raised midway) rolls the whole request back.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from . import auth
from .models import RUN_ID_LENGTH, Experiment, Run, TokenScope
from .repositories import runs as run_repo
from .services.lifecycle import CrashDetector
from .settings import Settings
from .telemetry import ApiMetrics

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_telemetry(request: Request) -> ApiMetrics:
    return request.app.state.telemetry


async def get_crash_detector(request: Request) -> CrashDetector:
    return request.app.state.crash_detector


def get_session(request: Request) -> Iterator[Session]:
    factory = request.app.state.read_sessions if request.method in READ_METHODS else request.app.state.write_sessions
    with factory() as session:
        yield session


SettingsDep = Annotated[Settings, Depends(get_settings)]
TelemetryDep = Annotated[ApiMetrics, Depends(get_telemetry)]
CrashDetectorDep = Annotated[CrashDetector, Depends(get_crash_detector)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(session: SessionDep,
                  authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> auth.Principal:
    """The caller: open access while no token exists; otherwise the bearer token's project and scope (or 401)."""
    token = auth.bearer_token(authorization)
    if token is not None:
        principal = auth.resolve_token(session, token)
        if principal is not None:
            return principal
    if not auth.tokens_exist(session):
        return auth.OPEN_ACCESS
    detail = "invalid API token" if token else "missing API token (Authorization: Bearer <token>)"
    raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


PrincipalDep = Annotated[auth.Principal, Depends(get_principal)]


def require_access(principal: auth.Principal, project_id: int, write: bool) -> None:
    """403 unless `principal` may read (or write) in `project_id`."""
    if principal.open:
        return
    if principal.project_id != project_id:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token belongs to another project")
    if write and principal.scope != TokenScope.WRITE:
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this token has read scope; writing needs a write token")


def _load_run(session: Session, run_id: str, for_write: bool = False) -> Run:
    run = (run_repo.get_run_for_write if for_write else run_repo.get_run)(session, run_id)
    if run is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run_id: no run {run_id!r}")
    return run


def get_readable_run(session: SessionDep, principal: PrincipalDep, crashes: CrashDetectorDep,
                     run_id: Annotated[str, Path(max_length=RUN_ID_LENGTH)]) -> Run:
    run = _load_run(session, run_id)
    require_access(principal, run.experiment.project_id, write=False)
    if crashes.refresh_if_stale(session, [run]):
        run = _load_run(session, run_id)
    return run


def get_writable_run(session: SessionDep, principal: PrincipalDep,
                     run_id: Annotated[str, Path(max_length=RUN_ID_LENGTH)]) -> Run:
    run = _load_run(session, run_id, for_write=True)
    require_access(principal, run.experiment.project_id, write=True)
    return run


def get_readable_experiment(session: SessionDep, principal: PrincipalDep,
                            experiment_id: Annotated[int, Path(ge=1)]) -> Experiment:
    experiment = session.scalar(select(Experiment).where(Experiment.id == experiment_id)
                                .options(selectinload(Experiment.project)))
    if experiment is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"experiment_id: no experiment {experiment_id}")
    require_access(principal, experiment.project_id, write=False)
    return experiment


ReadableRun = Annotated[Run, Depends(get_readable_run)]
WritableRun = Annotated[Run, Depends(get_writable_run)]
ReadableExperiment = Annotated[Experiment, Depends(get_readable_experiment)]
