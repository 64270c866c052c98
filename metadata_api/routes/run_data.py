"""What the dashboard's scripts read and do besides the rest of the API:

- `GET /api/runs/{run_id}/keys`: the run's metric keys (`{run_id, keys}`), from the block summaries;
- `GET /api/runs/{run_id}/logs`: the run's log lines, `level` (that level and above), `q` (text in the message),
  `after_id` (lines after that one: following the log), `tail` (the last `limit` lines), `limit`;
- `POST /api/session` `{token}`: keep an API token in the browser's session cookie (`web.session`), answers
  `{project, scope}` (401 for an unknown token); `DELETE /api/session` forgets it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from pydantic import BaseModel, Field

from .. import auth, errors
from ..deps import ReadableRun, SessionDep
from ..models import Project
from ..repositories import run_views
from ..schemas import INT64_MAX, Level, RankQuery, Text
from ..web import session as web_session
from ..web.rendering import iso

router = APIRouter(prefix="/api", tags=["dashboard"])


class RunKeys(BaseModel):
    run_id: str
    rank: int
    keys: list[str]
    ranks: list[int]


class RunLogLine(BaseModel):
    id: int
    time: str
    level: str
    message: str


class RunLogs(BaseModel):
    run_id: str
    items: list[RunLogLine]


class SessionIn(BaseModel):
    token: Text = Field(min_length=1, max_length=256)


class SessionOut(BaseModel):
    project: str
    scope: str


@router.get("/runs/{run_id}/keys", response_model=RunKeys)
def run_keys(run: ReadableRun, session: SessionDep, rank: RankQuery = 0) -> RunKeys:
    """The metric keys of one rank of the run (rank 0 by default), in order, and the ranks that logged any."""
    return RunKeys(run_id=run.id, rank=rank, keys=run_views.metric_keys(session, run.key, rank),
                   ranks=run_views.metric_ranks(session, run.key))


@router.get("/runs/{run_id}/logs", response_model=RunLogs)
def run_logs(run: ReadableRun, session: SessionDep, level: Level | None = None,
             q: Annotated[Text | None, Query(max_length=200)] = None,
             after_id: Annotated[int | None, Query(ge=0, le=INT64_MAX)] = None, tail: bool = False,
             limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> RunLogs:
    """The run's log lines in time order, filtered (see the module docstring)."""
    lines = run_views.log_lines(session, run.key, level, q, after_id, limit, tail)
    return RunLogs(run_id=run.id, items=[RunLogLine(id=line.id, time=iso(line.time), level=line.level,
                                                    message=line.message) for line in lines])


@router.post("/session", response_model=SessionOut, responses={401: errors.error("an unknown or revoked token")})
def start_session(body: SessionIn, request: Request, response: Response, session: SessionDep) -> SessionOut:
    """Sign the browser in: the token is kept in an HttpOnly, SameSite=Strict cookie."""
    principal = auth.resolve_token(session, body.token.strip())
    if principal is None or principal.project_id is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "token: unknown or revoked API token")
    project = session.get(Project, principal.project_id)
    web_session.start(request, response, body.token.strip())
    return SessionOut(project=project.name if project else "", scope=principal.scope.value)


@router.delete("/session", status_code=status.HTTP_204_NO_CONTENT)
def end_session(request: Request) -> Response:
    """Sign the browser out (forget the cookie)."""
    response = Response(status_code=status.HTTP_204_NO_CONTENT)
    web_session.end(request, response)
    return response
