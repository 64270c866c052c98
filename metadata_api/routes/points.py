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
from collections.abc import Callable
from datetime import timedelta
from itertools import chain
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from trainmon.common.naming import MAX_KEY_LENGTH, normalize_key
from trainmon.common.wire import NONFINITE_JSON

from .. import errors
from ..db import SPECIAL_FINITE, encode_value, utcnow
from ..deps import ProjectQuery, RunIdPath, principal_of, resolve_run
from ..models import NAME_LENGTH, RunStatus
from ..repositories import ingest_batches
from ..repositories import points as point_repo
from ..repositories import runs as run_repo
from ..routing import DirectRoute, batch_answer, store_batch
from ..schemas import IngestResult, MetricBatch, PointIn, metric_key_error, openapi_body, parse_json_body
from ..schemas.base import check_text
from ..schemas.points import MAX_RANK, MAX_STEP, merge_row_value_errors
from ..transactions import driver_transaction

router = APIRouter(prefix="/api", tags=["metrics"], route_class=DirectRoute)
KIND = "metrics"
HEARTBEAT_RESOLUTION = timedelta(seconds=1)
ENCODED_NONFINITE = {text: encode_value(number) for text, number in NONFINITE_JSON.items()}  # the wire's strings
_SDK_FIELDS = frozenset({"batch_id", "rank", "rows"})  # `sdk_batch`: a batch with any other field is pydantic's


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


def sdk_batch(body: bytes) -> tuple[str, int, list] | None:
    """(batch_id, rank, rows) of a body that is what the SDK sends, parsed by orjson: a batch in the rows form with
    nothing but `batch_id`, `rank` and `rows`, its id and rank valid (its rows are checked by `row_points`). None
    for anything else, and for any body orjson cannot parse: pydantic parses those (`parse_metric_batch`), and
    answers their errors. orjson and a few type checks cost about a quarter of pydantic's validation of the
    same batch (27 -> 8 us hot, 59 -> 15 us with cold caches, 100 points)."""
    try:
        batch = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if batch.__class__ is not dict or not batch.keys() <= _SDK_FIELDS:
        return None
    batch_id, rank, rows = batch.get("batch_id"), batch.get("rank", 0), batch.get("rows")
    if batch_id.__class__ is not str or not 0 < len(batch_id) <= NAME_LENGTH or rank.__class__ is not int \
            or not 0 <= rank <= MAX_RANK or rows.__class__ is not list or not rows:
        return None
    try:
        check_text(batch_id)
    except ValueError:
        return None
    return batch_id, rank, rows


def sdk_points(body: bytes, now: float) -> tuple[str, int, list[point_repo.PointRow], int] | None:
    """(batch_id, rank, points, values given) of a body the fast way (`sdk_batch`, then `row_points` checking
    each element), or None for pydantic to parse."""
    sent = sdk_batch(body)
    parsed = None if sent is None else row_points(sent[2], now, checked=False)
    return None if sent is None or parsed is None else (sent[0], sent[1], *parsed)


def row_points(rows: list[Any], now: float, checked: bool = True) -> tuple[list[point_repo.PointRow], int] | None:
    """`point_rows` for the rows form, and the count of values given: the values of each row at its step and wall
    time, grouped by key (SQLite inserts a series' points one after another into the same index pages: 1.79 ->
    1.58 us a point in a 12,000-point batch). What the SDK sends (steps rising row by row, keys already normalised)
    cannot name a (key, step) twice, so it skips the deduplication.

    `checked=False`: rows as parsed by orjson (`sdk_batch`), each element checked here as `schemas.Row` would
    (strict types and bounds; JSON has no non-finite number for orjson to give); None at the first that is not
    as expected, or a key that does not normalise, for pydantic to judge. Rows pydantic validated pass the same
    checks; an unusable key is their 422."""
    keys: dict[str, tuple[str, Callable[[point_repo.PointRow], None]]] = {}  # as sent -> key, its series' append
    series: dict[str, list[point_repo.PointRow]] = {}  # key -> its points in the order sent
    previous_step = -1
    unique = True  # no (key, step) twice: steps rise row by row and every key is its own normalisation
    for index, row in enumerate(rows):
        if (row.__class__ is not list and row.__class__ is not tuple) or len(row) != 3:
            return None
        step, wall_time, values = row
        if step.__class__ is not int or not 0 <= step <= MAX_STEP or values.__class__ is not dict or not values:
            return None
        if wall_time is None:
            wall_time = now
        elif wall_time.__class__ is not float or not wall_time >= 0.0:
            return None
        if step <= previous_step:
            unique = False
        previous_step = step
        for given, value in values.items():
            entry = keys.get(given)
            if entry is None:
                if not 0 < len(given) <= MAX_KEY_LENGTH:
                    return None
                if checked:
                    key = _key(given, ("body", "rows", index, 2, given, "[key]"))
                elif (key := normalize_key(given)) is None:
                    return None
                entry = keys[given] = key, series.setdefault(key, []).append
                unique = unique and key == given
            key, append = entry
            # `stored_value`, inlined: a call a value costs ~5 us a 100-point batch
            if value.__class__ is float:
                if value - value == 0.0:  # finite (NaN and +-Inf give NaN): the common case, no call
                    special = SPECIAL_FINITE
                else:  # pydantic parses the JSON tokens NaN and Infinity
                    value, special = encode_value(value)
            elif value.__class__ is str and value in ENCODED_NONFINITE:
                value, special = ENCODED_NONFINITE[value]
            else:
                return None
            append((key, step, value, special, wall_time))
    found = list(chain.from_iterable(series.values()))
    count = len(found)
    return (found if unique else list({(point[0], point[1]): point for point in found}.values())), count


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
    received = time.time()
    sent = sdk_points(body, received)
    if sent is not None:
        batch_id, rank, points, count = sent
        _check_count(count, "rows", state.settings.max_points_per_batch)
    else:
        batch = parse_metric_batch(body)
        batch_id, rank, count = batch.batch_id, batch.rank, batch.point_count
        _check_count(count, "points" if batch.points is not None else "rows", state.settings.max_points_per_batch)
        points = point_rows(batch.points, received) if batch.points is not None \
            else row_points(batch.rows, received)[0]  # type: ignore[index] - validated rows pass
    with driver_transaction(state.engine, wait=wait) as connection:
        principal = principal_of(request, connection)  # first: without a valid token, 401 whether the run exists or not
        run: Any = resolve_run(connection, principal, run_id, project, write=True, refs_only=True)
        if not ingest_batches.claim_batch(connection, run.key, KIND, batch_id, len(points)):
            return ingest_batches.stored_count(connection, run.key, KIND, batch_id) or 0, True  # wrote nothing
        accepted = point_repo.upsert_points(connection, run.key, rank, points)
        now = utcnow()
        if run.status == RunStatus.RUNNING.value and now - run.last_heartbeat > HEARTBEAT_RESOLUTION:
            run_repo.touch_heartbeat(connection, run.key, now)  # a batch is a sign of life (not every batch)
    return accepted, False


def _check_count(count: int, field: str, most: int) -> None:
    if count > most:
        raise HTTPException(413, f"{field}: {count} points, at most {most} a batch")
