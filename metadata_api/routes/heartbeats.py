"""A run's heartbeat: `POST /api/runs/{run_id}/heartbeat` (every rank, every HEARTBEAT_INTERVAL).

After metric batches it is the API's most frequent request (64 ranks: about 13 a second), so it takes the ingest
route's path (`routing.DirectRoute`, driver-level SQL, on the event loop while SQLite's write lock is free): for a
RUNNING run it is one conditional UPDATE of `last_heartbeat`. Anything else, a CRASHED run coming back to life
(RUNNING again, counted and notified like every status change) or a finished run (409), goes through the run's
lifecycle in an ORM session, as every other status change does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response, status
from starlette.concurrency import run_in_threadpool

from .. import errors
from ..db import utcnow
from ..deps import ProjectQuery, RunIdPath, principal_of, resolve_run
from ..models import RunStatus
from ..repositories import runs as run_repo
from ..routing import DirectRoute, request_body, write_on_loop_or_thread
from ..schemas import Heartbeat, openapi_body, parse_json_body
from ..services import lifecycle
from ..transactions import driver_transaction

router = APIRouter(prefix="/api", tags=["runs"], route_class=DirectRoute)
#: documented as before: a JSON object, `null` or no body at all
_OPTIONAL_BODY = openapi_body(Heartbeat)
_OPTIONAL_BODY["requestBody"]["required"] = False
_BODY_SCHEMA = _OPTIONAL_BODY["requestBody"]["content"]["application/json"]
_BODY_SCHEMA["schema"] = {"anyOf": [_BODY_SCHEMA["schema"], {"type": "null"}]}


@router.post("/runs/{run_id}/heartbeat", status_code=status.HTTP_204_NO_CONTENT,
             responses={409: errors.error("the run is COMPLETED or FAILED, or its id exists in several projects "
                                          "(give `project`)")},
             openapi_extra=_OPTIONAL_BODY)
async def heartbeat(request: Request, run_id: RunIdPath, project: ProjectQuery = None) -> Response:
    """A sign of life (the body, `{}` or none, is ignored)."""
    body = await request_body(request)
    if body.strip() not in (b"", b"null"):
        parse_json_body(Heartbeat, body)
    if not await write_on_loop_or_thread(request.app.state.engine, touch_running_run, request, run_id, project):
        await run_in_threadpool(heartbeat_in_session, request, run_id, project)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def touch_running_run(request: Request, run_id: str, project: str | None, wait: bool = True) -> bool:
    """Move a RUNNING run's `last_heartbeat` to now, in one transaction of driver-level SQL: True when done,
    False when the run is not RUNNING (nothing written; `heartbeat_in_session` decides)."""
    with driver_transaction(request.app.state.engine, wait=wait) as connection:
        principal = principal_of(request, connection)  # first: without a valid token, 401 whether the run exists or not
        run: Any = resolve_run(connection, principal, run_id, project, write=True, refs_only=True)
        if run.status != RunStatus.RUNNING.value:
            return False
        return run_repo.touch_heartbeat(connection, run.key, utcnow(), only_running=True)


def heartbeat_in_session(request: Request, run_id: str, project: str | None) -> None:
    """The heartbeat through the run's lifecycle: a CRASHED run becomes RUNNING again, a finished one is a 409."""
    with request.app.state.write_sessions() as session:
        run = resolve_run(session, principal_of(request, session), run_id, project, write=True)
        run_repo.lock(session, run)
        try:
            lifecycle.heartbeat(run)
        except lifecycle.IllegalTransition as error:
            raise HTTPException(status.HTTP_409_CONFLICT, f"status: {error}") from error
        session.commit()
