"""Liveness, readiness (the database answers, is migrated and takes writes) and the API's own /metrics.

`/readyz` is 503 while the database cannot take writes (`db.storage_check`: a SQLite file deleted or replaced,
read-only or on a full disk; a read-only PostgreSQL), with the reason; the same faults make requests 503."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from .. import migrations
from ..db import storage_check, storage_problem

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness, answered on the event loop (no worker thread: it is only as alive as the loop); `service` lets
    a trainer tell this API from another server on the same port."""
    return {"status": "ok", "service": "trainmon-metadata-api"}


class NotReady(BaseModel):
    status: str = "unavailable"
    reason: str


@router.get("/readyz", responses={503: {"model": NotReady, "description": "database unreachable, not migrated, or "
                                        "unable to take writes (file deleted or replaced, read-only, disk full)"}})
def readyz(request: Request, response: Response) -> dict[str, str]:
    engine = request.app.state.engine
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        revision = migrations.current_revision(engine)
    except SQLAlchemyError as error:
        return _unavailable(request, response, storage_problem(error) or type(error).__name__)
    if revision != migrations.head_revision():
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return {"status": "unavailable", "reason": f"database at revision {revision}, code expects head"}
    problem = storage_check(engine)
    if problem is not None:
        return _unavailable(request, response, problem)
    return {"status": "ready", "revision": revision or ""}


def _unavailable(request: Request, response: Response, reason: str) -> dict[str, str]:
    request.app.state.telemetry.db_errors.inc()
    response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    response.headers["Retry-After"] = "5"
    return {"status": "unavailable", "reason": reason}


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    return Response(generate_latest(request.app.state.telemetry.registry), media_type=CONTENT_TYPE_LATEST)
