"""Run log lines: `POST /api/runs/{run_id}/logs` (batches, idempotent by `batch_id`) and
`GET /api/logs/{experiment_id}` (paginated, time order, filter by `run_id` and `level`).

Levels are `trainmon.common.statuses.LOG_LEVELS`, case-insensitive on the way in; any other level is a 422."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status

from .. import errors
from ..deps import ReadableExperiment, SessionDep, SettingsDep, WritableRun
from ..models import LogLine
from ..repositories import ingest_batches, records
from ..schemas import ExperimentLogs, IngestResult, Level, LogBatch, LogLineOut, RunId
from .experiments import Offset

router = APIRouter(prefix="/api", tags=["logs"])
KIND = "logs"
LogLimit = Annotated[int, Query(ge=1, le=10_000)]


@router.post("/runs/{run_id}/logs", response_model=IngestResult,
             responses={413: errors.error("body over MAX_BODY_BYTES, or more lines than "
                                                             "MAX_POINTS_PER_BATCH")})
def ingest_logs(body: LogBatch, run: WritableRun, session: SessionDep, settings: SettingsDep) -> IngestResult:
    """Store a batch of log lines once: a replayed `batch_id` stores nothing and answers `duplicate: true`."""
    if len(body.lines) > settings.max_points_per_batch:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            f"lines: {len(body.lines)} lines, at most {settings.max_points_per_batch} a batch")
    if not ingest_batches.claim_batch(session, run.key, KIND, body.batch_id, len(body.lines)):
        first = ingest_batches.stored_count(session, run.key, KIND, body.batch_id)
        session.rollback()
        return IngestResult(accepted=first or 0, duplicate=True)
    accepted = records.add_log_lines(session, run.key, [(line.time, line.level, line.message) for line in body.lines])
    session.commit()
    return IngestResult(accepted=accepted, duplicate=False)


@router.get("/logs/{experiment_id}", response_model=ExperimentLogs)
def experiment_logs(experiment: ReadableExperiment, session: SessionDep, limit: LogLimit = 1000, offset: Offset = 0,
                    run_id: RunId | None = None, level: Level | None = None) -> ExperimentLogs:
    """The experiment's log lines in time order."""
    lines, total = records.experiment_log_lines(session, experiment.id, limit, offset, run_id, level)
    return ExperimentLogs(experiment_id=experiment.id, items=[_line_out(line, rid) for line, rid in lines],
                          total=total, limit=limit, offset=offset)


def _line_out(line: LogLine, run_id: str) -> LogLineOut:
    return LogLineOut(run_id=run_id, time=line.time, level=line.level, message=line.message)
