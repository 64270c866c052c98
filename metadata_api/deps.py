"""Typed request dependencies: settings, the DB session (one transaction per request), the API's telemetry, the
crash detector, who is calling, and the run or experiment a path names, already checked for existence (404) and
access (401/403); a run read this way has been through crash detection (`services.lifecycle.CrashDetector`).

Run ids are unique per project, so a path's run id is looked up in one project (`resolve_run`):
- with a token: the token's project. A run id of another project is a 404, exactly like an unknown one (nothing
  of other projects is shown); `?project=` naming another project is a 403;
- open API (no token exists): the project `?project=` names; without it the one run of that id in any project,
  and 409 when several projects have one ("give ?project=").

Sessions: requests that only read (GET/HEAD) get a read session; others a write session (BEGIN IMMEDIATE on
SQLite). Nothing commits unless the route calls `session.commit()` before answering; anything else (an
exception, a 4xx raised midway) rolls the whole request back.

Cost: FastAPI runs every plain `def` dependency in a worker thread, one thread hop (tens of microseconds of CPU)
each, and a generator dependency costs two. So `get_session` is async (creating a session does no I/O; closing one
that still holds a connection is done in a worker thread), and `ReadableRun`/`WritableRun` resolve the caller
themselves (`principal_of`, remembered for the request) in the same hop as the run: a write to a run costs one
hop before its route runs, not four.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Path, Query, Request, status
from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload
from starlette.concurrency import run_in_threadpool

from . import auth
from .models import NAME_LENGTH, RUN_ID_LENGTH, Experiment, Run, TokenScope
from .repositories import projects as project_repo
from .repositories import runs as run_repo
from .schemas.base import INT32_MAX, Text
from .services.lifecycle import CrashDetector
from .settings import Settings
from .telemetry import ApiMetrics
from .web import session as web_session

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_telemetry(request: Request) -> ApiMetrics:
    return request.app.state.telemetry


async def get_crash_detector(request: Request) -> CrashDetector:
    return request.app.state.crash_detector


async def get_session(request: Request) -> AsyncIterator[Session]:
    state = request.app.state
    session = (state.read_sessions if request.method in READ_METHODS else state.write_sessions)()
    try:
        yield session
    finally:
        if session.in_transaction():  # it holds a connection: the rollback is I/O, kept off the event loop
            await run_in_threadpool(session.close)
        else:
            session.close()


SettingsDep = Annotated[Settings, Depends(get_settings)]
TelemetryDep = Annotated[ApiMetrics, Depends(get_telemetry)]
CrashDetectorDep = Annotated[CrashDetector, Depends(get_crash_detector)]
SessionDep = Annotated[Session, Depends(get_session)]


def get_principal(request: Request, session: SessionDep,
                  authorization: Annotated[str | None, Header(include_in_schema=False)] = None) -> auth.Principal:
    """The caller: open access while no token exists; otherwise the bearer token's project and scope, or the
    dashboard's session cookie's (`web.session`: a write by cookie needs its CSRF header), or 401."""
    return principal_of(request, session, authorization)


_PRINCIPAL = "trainmon.principal"


def principal_of(request: Request, session: Session, authorization: str | None = None) -> auth.Principal:
    """`get_principal`'s answer, found once per request (dependencies that need the caller call this in their
    own worker thread instead of depending on `PrincipalDep`, which would cost a thread hop of its own)."""
    found = request.scope.get(_PRINCIPAL)
    if found is None:
        if authorization is None:
            authorization = request.headers.get("authorization")
        found = request.scope[_PRINCIPAL] = _resolve_principal(request, session, authorization)
    return found


def _resolve_principal(request: Request, session: Session, authorization: str | None) -> auth.Principal:
    token = auth.bearer_token(authorization)
    from_cookie = token is None and (token := web_session.cookie_token(request)) is not None
    if token is not None:
        principal = auth.resolve_token(session, token)
        if principal is not None:
            if from_cookie and request.method not in READ_METHODS:
                web_session.check_csrf(request)
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


RunIdPath = Annotated[Text, Path(max_length=RUN_ID_LENGTH)]
#: `?project=`: the project whose run the path names (needed on an open API when the id exists in several)
ProjectQuery = Annotated[Text | None, Query(min_length=1, max_length=NAME_LENGTH,
                                           description="the run's project (default: the token's project, or the "
                                                       "only project that has this run id)")]


def resolve_run(session: Session, principal: auth.Principal, run_id: str, project: str | None = None,
                write: bool = False, field: str = "run_id", refs_only: bool = False) -> Run:
    """The run `run_id` names for this caller (rules above), access checked; 404/403/409 naming `field`. With
    `refs_only`, its `run_repo.RunRef` instead (then `session` may be any connection, e.g. the ingest path's)."""
    project_id = principal.project_id
    if project is not None:
        named = project_repo.project_id_of(session, project)
        if not principal.open and named != principal.project_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"project: this token cannot access project {project!r}")
        if named is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"project: no project {project!r}")
        project_id = named
    found = run_repo.find_run_refs(session, run_id, project_id) if refs_only \
        else run_repo.find_runs(session, run_id, project_id, for_write=write)
    if not found:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"{field}: no run {run_id!r}")
    if len(found) > 1:
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"{field}: run id {run_id!r} exists in several projects; give ?project=")
    run = found[0]
    require_access(principal, run.project_id, write=write)
    return run


def get_readable_run(request: Request, session: SessionDep, crashes: CrashDetectorDep, run_id: RunIdPath,
                     project: ProjectQuery = None) -> Run:
    principal = principal_of(request, session)  # first: without a valid token, 401 whether the run exists or not
    run = resolve_run(session, principal, run_id, project)
    key = run.key
    if crashes.refresh_if_stale(session, [run]):
        run = run_repo.get_run(session, key)
        if run is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"run_id: no run {run_id!r}")
    return run


def get_writable_run(request: Request, session: SessionDep, run_id: RunIdPath, project: ProjectQuery = None) -> Run:
    principal = principal_of(request, session)  # first: without a valid token, 401 whether the run exists or not
    return resolve_run(session, principal, run_id, project, write=True)


def get_readable_experiment(request: Request, session: SessionDep,
                            experiment_id: Annotated[int, Path(ge=1, le=INT32_MAX)]) -> Experiment:
    principal = principal_of(request, session)  # first: without a valid token, 401 whether it exists or not
    experiment = session.scalar(select(Experiment).where(Experiment.id == experiment_id)
                                .options(selectinload(Experiment.project)))
    if experiment is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"experiment_id: no experiment {experiment_id}")
    require_access(principal, experiment.project_id, write=False)
    return experiment


ReadableRun = Annotated[Run, Depends(get_readable_run)]
WritableRun = Annotated[Run, Depends(get_writable_run)]
ReadableExperiment = Annotated[Experiment, Depends(get_readable_experiment)]
