"""Run log lines: `POST /api/runs/{run_id}/logs` (batches, idempotent by `batch_id`) and
`GET /api/logs/{experiment_id}` (paginated, time order, filter by `run_id` and `level`).

Levels are `trainmon.common.statuses.LOG_LEVELS`, case-insensitive on the way in; any other level is a 422.

A rank sends a log batch about once a second, so the POST takes the metric batches' path (`routing.DirectRoute`,
one transaction of driver-level SQL, on the event loop while SQLite's write lock is free; `routes.points`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response, status

from .. import errors
from ..deps import ProjectQuery, ReadableExperiment, RunIdPath, SessionDep, principal_of, resolve_run
from ..models import LogLine
from ..repositories import ingest_batches, records
from ..routing import DirectRoute, batch_answer, store_batch
from ..schemas import ExperimentLogs, IngestResult, Level, LogBatch, LogLineOut, RunId, openapi_body, parse_json_body
from ..transactions import driver_transaction
from .experiments import Offset

router = APIRouter(prefix="/api", tags=["logs"])
KIND = "logs"
LogLimit = Annotated[int, Query(ge=1, le=10_000)]


async def ingest_logs(request: Request, run_id: RunIdPath, project: ProjectQuery = None) -> Response:
    """Store a batch of log lines once: a replayed `batch_id` stores nothing and answers `duplicate: true`."""
    return batch_answer(*await store_batch(request, store_log_batch, run_id, project))


def store_log_batch(request: Request, run_id: str, project: str | None, body: bytes,
                    wait: bool = True) -> tuple[int, bool]:
    """Validate and store one batch of log lines in one transaction of driver-level SQL, as metric batches are
    (`routes.points`): (accepted, duplicate)."""
    state = request.app.state
    batch = parse_json_body(LogBatch, body)
    if len(batch.lines) > state.settings.max_points_per_batch:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"lines: {len(batch.lines)} lines, at most {state.settings.max_points_per_batch} a batch")
    with driver_transaction(state.engine, wait=wait) as connection:
        principal = principal_of(request, connection)  # first: without a valid token, 401 whether the run exists or not
        run: Any = resolve_run(connection, principal, run_id, project, write=True, refs_only=True)
        if not ingest_batches.claim_batch(connection, run.key, KIND, batch.batch_id, len(batch.lines)):
            return ingest_batches.stored_count(connection, run.key, KIND, batch.batch_id) or 0, True
        accepted = records.add_log_lines(connection, run.key,
                                         [(line.time, line.level, line.message) for line in batch.lines])
    return accepted, False


router.add_api_route("/runs/{run_id}/logs", ingest_logs, methods=["POST"], route_class_override=DirectRoute,
                     response_model=IngestResult, openapi_extra=openapi_body(LogBatch),
                     responses={413: errors.error("body over MAX_BODY_BYTES, or more lines than MAX_POINTS_PER_BATCH")})


@router.get("/logs/{experiment_id}", response_model=ExperimentLogs)
def experiment_logs(experiment: ReadableExperiment, session: SessionDep, limit: LogLimit = 1000, offset: Offset = 0,
                    run_id: RunId | None = None, level: Level | None = None) -> ExperimentLogs:
    """The experiment's log lines in time order."""
    lines, total = records.experiment_log_lines(session, experiment.id, limit, offset, run_id, level)
    return ExperimentLogs(experiment_id=experiment.id, items=[_line_out(line, rid) for line, rid in lines],
                          total=total, limit=limit, offset=offset)


def _line_out(line: LogLine, run_id: str) -> LogLineOut:
    return LogLineOut(run_id=run_id, time=line.time, level=line.level, message=line.message)
