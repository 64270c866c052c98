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

Cost: this is the API's hottest request (64 ranks send one every second or so), so it is one `async` route that
reads the body and stores it (`store_metric_batch`) in one transaction of driver-level SQL
(`transactions.DriverConnection`: no statement building, no ORM entity), and writes its answer as bytes (no
response-model pass). On SQLite a small batch (<= routing.INLINE_MAX_BYTES) is stored right on the event loop when
the write lock is free (`transactions.WriterBusy` otherwise: nothing waits on the loop;
`routing.write_on_loop_or_thread`), which saves the hand-off to a worker thread (about 0.25 ms of CPU, more than
the rest of the request's Python); a larger batch, a busy database and PostgreSQL (network round trips) go to a
worker thread. The checks and answers are those of every other route.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from trainmon.common.naming import normalize_key
from trainmon.common.wire import NONFINITE_JSON

from .. import errors
from ..db import SPECIAL_FINITE, encode_value, utcnow
from ..deps import ProjectQuery, RunIdPath, principal_of, resolve_run
from ..models import RunStatus
from ..repositories import ingest_batches
from ..repositories import points as point_repo
from ..repositories import runs as run_repo
from ..routing import DirectRoute, batch_answer, store_batch
from ..schemas import IngestResult, MetricBatch, PointIn, metric_key_error, openapi_body, parse_json_body
from ..schemas.points import Row, merge_row_value_errors
from ..transactions import driver_transaction

router = APIRouter(prefix="/api", tags=["metrics"], route_class=DirectRoute)
KIND = "metrics"
HEARTBEAT_RESOLUTION = timedelta(seconds=1)
ENCODED_NONFINITE = {text: encode_value(number) for text, number in NONFINITE_JSON.items()}  # the wire's strings


def parse_metric_batch(body: bytes) -> MetricBatch:
    """The request body as a MetricBatch, parsed and validated by pydantic-core in one pass (422 naming the
    point)."""
    try:
        return parse_json_body(MetricBatch, body)
    except RequestValidationError as error:
        raise RequestValidationError(merge_row_value_errors(error.errors()), body=body) from None

def stored_value(value: float | str) -> tuple[float | None, int]:
    """(value, special) as stored (`db.encode_value`) for a value as sent: a number or a non-finite string."""
    if value.__class__ is str:
        return ENCODED_NONFINITE[value]
    if value - value == 0.0:  # finite (NaN and +-Inf give NaN): the common case, no call
        return value, SPECIAL_FINITE
    return encode_value(value)


def point_rows(points: list[PointIn], now: float) -> list[point_repo.PointRow]:
    """(key, step, value, special, wall_time) for each (key, step), the last point given for it; keys are
    normalised once per distinct key (422 naming the point when one is unusable), values encoded as stored
    (`db.encode_value`; the non-finite strings too)."""
    keys: dict[str, str] = {}
    latest: dict[tuple[str, int], point_repo.PointRow] = {}
    for index, point in enumerate(points):
        given, step, value, wall_time = point["key"], point["step"], point["value"], point.get("wall_time")
        key = keys.get(given)
        if key is None:
            key = _key(given, ("body", "points", index, "key"))
            keys[given] = key
        latest[(key, step)] = (key, step, *stored_value(value), now if wall_time is None else wall_time)
    return list(latest.values())


def row_points(rows: list[Row], now: float) -> list[point_repo.PointRow]:
    """`point_rows` for the rows form: the values of each row at its step and wall time. What the SDK sends (steps
    rising row by row, keys already normalised) cannot name a (key, step) twice, so it skips the deduplication."""
    keys: dict[str, str] = {}
    found: list[point_repo.PointRow] = []
    append = found.append
    previous_step = -1
    unique = True  # no (key, step) twice: steps rise row by row and every key is its own normalisation
    for index, (step, wall_time, values) in enumerate(rows):
        if step <= previous_step:
            unique = False
        previous_step = step
        wall = now if wall_time is None else wall_time
        for given, value in values.items():
            key = keys.get(given)
            if key is None:
                key = keys[given] = _key(given, ("body", "rows", index, 2, given, "[key]"))
                unique = unique and key == given
            if value.__class__ is str:  # `stored_value`, inlined: a call a value costs ~5 us a 100-point batch
                value, special = ENCODED_NONFINITE[value]
            elif value - value == 0.0:
                special = SPECIAL_FINITE
            else:
                value, special = encode_value(value)
            append((key, step, value, special, wall))
    return found if unique else list({(point[0], point[1]): point for point in found}.values())


def _key(given: str, loc: tuple[Any, ...]) -> str:
    key = normalize_key(given)
    if key is None:
        raise RequestValidationError([metric_key_error(loc, given)])
    return key


@router.post("/runs/{run_id}/metrics", response_model=IngestResult,
             responses={
                        413: errors.error("body over MAX_BODY_BYTES or over MAX_POINTS_PER_BATCH points")},
             openapi_extra=openapi_body(MetricBatch))
async def ingest_metrics(request: Request, run_id: RunIdPath, project: ProjectQuery = None) -> Response:
    accepted, duplicate = await store_batch(request, store_metric_batch, run_id, project)
    if not duplicate:
        request.app.state.telemetry.points_ingested.inc(accepted)
    return batch_answer(accepted, duplicate)


def store_metric_batch(request: Request, run_id: str, project: str | None, body: bytes,
                       wait: bool = True) -> tuple[int, bool]:
    """Validate and store one batch (see the module docstring) in one transaction: (accepted, duplicate).
    `wait=False`: `transactions.WriterBusy` instead of waiting for SQLite's write lock."""
    state = request.app.state
    batch = parse_metric_batch(body)
    count = batch.point_count
    if count > state.settings.max_points_per_batch:
        field = "points" if batch.points is not None else "rows"
        raise HTTPException(413, f"{field}: {count} points, at most {state.settings.max_points_per_batch} a batch")
    received = time.time()
    points = point_rows(batch.points, received) if batch.points is not None else row_points(batch.rows, received)
    with driver_transaction(state.engine, wait=wait) as connection:
        principal = principal_of(request, connection)  # first: without a valid token, 401 whether the run exists or not
        run: Any = resolve_run(connection, principal, run_id, project, write=True, refs_only=True)
        if not ingest_batches.claim_batch(connection, run.key, KIND, batch.batch_id, len(points)):
            return ingest_batches.stored_count(connection, run.key, KIND, batch.batch_id) or 0, True  # wrote nothing
        accepted = point_repo.upsert_points(connection, run.key, batch.rank, points)
        now = utcnow()
        if run.status == RunStatus.RUNNING.value and now - run.last_heartbeat > HEARTBEAT_RESOLUTION:
            run_repo.touch_heartbeat(connection, run.key, now)  # a batch is a sign of life (not every batch)
    return accepted, False
