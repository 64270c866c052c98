"""Metric point ingest: `POST /api/runs/{run_id}/metrics` (a batch of points of one run).

A batch holds its points as `points` (an object per point) or as `rows` (`[step, wall_time, {key: value}]`, one
per log call: what the SDK sends); both are validated alike (strict numbers, the non-finite strings, keys
normalised, a 422 naming the point) and stored alike.

Idempotency, two layers:
- `batch_id`: a batch is stored once per run; a replay (a retry after a timeout) answers
  `{accepted: <first count>, duplicate: true}` and writes nothing.
- natural key (run, rank, key, step): one value per step of each rank's series (a batch is one rank's). A
  second value for a step already stored, in another batch, replaces it (last write wins): a trainer resumed
  from a checkpoint re-logs those steps, and the re-run is the run's history now. Within one batch the last
  point for a (key, step) wins.
The batch row and its points commit in one transaction: a batch is stored whole or not at all.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, status
from fastapi.exceptions import RequestValidationError
from starlette.requests import ClientDisconnect
from trainmon.common.naming import normalize_key
from trainmon.common.wire import NONFINITE_JSON

from .. import errors
from ..db import utcnow
from ..deps import SessionDep, SettingsDep, TelemetryDep, WritableRun
from ..models import RunStatus
from ..repositories import ingest_batches
from ..repositories import points as point_repo
from ..repositories import runs as run_repo
from ..schemas import IngestResult, MetricBatch, PointIn, metric_key_error, openapi_body, parse_json_body
from ..schemas.points import Row, merge_row_value_errors

router = APIRouter(prefix="/api", tags=["metrics"])
KIND = "metrics"
HEARTBEAT_RESOLUTION = timedelta(seconds=1)


async def metric_batch(request: Request) -> MetricBatch:
    """The request body as a MetricBatch, parsed and validated by pydantic-core in one pass (the hot path)."""
    try:
        body = await request.body()
    except ClientDisconnect:  # the client went away, or BodyLimitMiddleware already answered 413
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "body: incomplete request body") from None
    try:
        return parse_json_body(MetricBatch, body)
    except RequestValidationError as error:
        raise RequestValidationError(merge_row_value_errors(error.errors()), body=body) from None


def point_rows(points: list[PointIn], now: float) -> list[point_repo.PointRow]:
    """(key, step, value, wall_time) for each (key, step), the last point given for it; keys are normalised once
    per distinct key (422 naming the point when one is unusable), non-finite strings become floats."""
    keys: dict[str, str] = {}
    latest: dict[tuple[str, int], point_repo.PointRow] = {}
    for index, point in enumerate(points):
        given, step, value, wall_time = point["key"], point["step"], point["value"], point.get("wall_time")
        key = keys.get(given)
        if key is None:
            key = _key(given, ("body", "points", index, "key"))
            keys[given] = key
        if value.__class__ is str:
            value = NONFINITE_JSON[value]
        latest[(key, step)] = (key, step, value, now if wall_time is None else wall_time)
    return list(latest.values())


def row_points(rows: list[Row], now: float) -> list[point_repo.PointRow]:
    """`point_rows` for the rows form: the values of each row at its step and wall time."""
    keys: dict[str, str] = {}
    latest: dict[tuple[str, int], point_repo.PointRow] = {}
    for index, (step, wall_time, values) in enumerate(rows):
        wall = now if wall_time is None else wall_time
        for given, value in values.items():
            key = keys.get(given)
            if key is None:
                key = _key(given, ("body", "rows", index, 2, given, "[key]"))
                keys[given] = key
            latest[(key, step)] = (key, step, NONFINITE_JSON[value] if value.__class__ is str else value, wall)
    return list(latest.values())


def _key(given: str, loc: tuple[Any, ...]) -> str:
    key = normalize_key(given)
    if key is None:
        raise RequestValidationError([metric_key_error(loc, given)])
    return key


@router.post("/runs/{run_id}/metrics", response_model=IngestResult,
             responses={
                        413: errors.error("body over MAX_BODY_BYTES or over MAX_POINTS_PER_BATCH points")},
             openapi_extra=openapi_body(MetricBatch))
def ingest_metrics(body: Annotated[MetricBatch, Depends(metric_batch)], run: WritableRun, session: SessionDep,
                   settings: SettingsDep, telemetry: TelemetryDep) -> IngestResult:
    count = body.point_count
    if count > settings.max_points_per_batch:
        field = "points" if body.points is not None else "rows"
        raise HTTPException(413, f"{field}: {count} points, at most {settings.max_points_per_batch} a batch")
    received = time.time()
    points = point_rows(body.points, received) if body.points is not None else row_points(body.rows, received)
    if not ingest_batches.claim_batch(session, run.key, KIND, body.batch_id, len(points)):
        first = ingest_batches.stored_count(session, run.key, KIND, body.batch_id)
        session.rollback()
        return IngestResult(accepted=first or 0, duplicate=True)
    accepted = point_repo.upsert_points(session, run.key, body.rank, points)
    now = utcnow()
    if run.status == RunStatus.RUNNING.value and now - run.last_heartbeat > HEARTBEAT_RESOLUTION:
        run_repo.touch_heartbeat(session, run.key, now)  # a batch is a sign of life (not re-written every batch)
    session.commit()
    telemetry.points_ingested.inc(accepted)
    return IngestResult(accepted=accepted, duplicate=False)
