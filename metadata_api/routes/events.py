"""Live updates of one run for the dashboard: `GET /api/runs/{run_id}/events`, server-sent events.

The browser opens one `EventSource` per run page; the server checks the database every POLL_SECONDS in short
read transactions of its own (the request's session is closed before streaming) and sends:
- `points`: `{"rank": r, "series": {key: [[step, value, wall_time], ...]}}` for the points of rank `rank`
  (default 0) written since the cursor; with `all_ranks=true`, `{"ranks": {"<rank>": {key: [...]}, ...}}` for the
  points of every rank;
- `logs`: `{"lines": [{id, time, level, message}, ...]}` for the new log lines;
- `status`: `{status, end_time, last_heartbeat}` whenever one of them changes (the first one at once);
- `reset`: more new points than one event carries (MAX_POINTS): reload the charts instead;
and a comment every KEEPALIVE_SECONDS. Each event's `id` is the cursor `<point id>.<log line id>`; the page
passes the cursor of the moment it was rendered (`cursor=`), and a reconnecting `EventSource` sends the last one
it got (`Last-Event-ID`), so nothing logged in between is missed. A stream lasts at most STREAM_SECONDS (the
browser reconnects at once, `retry`), so a server shutting down is never held up for long.

Cost per connection and poll: a primary-key range scan of the points and log lines written since the previous
poll (of every run: SCAN_ROWS at a time, at most MAX_SCANS scans, else a `reset` and a skip to now), never a run's
whole history, and one lookup of the run's row; at most MAX_POINTS points and MAX_LINES lines an event; at most
MAX_STREAMS streams per process (503 beyond). On PostgreSQL a point committed after a later-numbered one may be
missed by a stream (ids are taken before commit); the page's next reload or zoom reads it.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Request, status
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from trainmon.common.wire import json_value

from .. import errors
from ..db import decode_value
from ..deps import ReadableRun, SessionDep
from ..models import Run
from ..repositories import run_views
from ..schemas import RankQuery
from ..web.rendering import iso

router = APIRouter(prefix="/api", tags=["events"])
POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 10.0
STREAM_SECONDS = 25.0
MAX_POINTS = 5000
MAX_LINES = 500
MAX_STREAMS = 64
SCAN_ROWS = 20_000  # rows (of every run) one scan reads past the cursor
MAX_SCANS = 5  # scans a poll makes to catch up before skipping to now


CURSOR = r"^[0-9]{1,18}\.[0-9]{1,18}$"  # ASCII digits only (str.isdigit takes "²"), within BIGINT


def parse_cursor(text: str | None) -> tuple[int, int] | None:
    if text is None or not re.fullmatch(CURSOR, text.strip()):
        return None
    points, _, lines = text.strip().partition(".")
    return int(points), int(lines)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "the run's live events"},
                       503: errors.error("too many open event streams, or the database is busy: retry later")})
def run_events(request: Request, run: ReadableRun, session: SessionDep,
               cursor: Annotated[str | None, Query(max_length=64, pattern=CURSOR,
                                                   description="`<point id>.<log id>`")] = None,
               last_event_id: Annotated[str | None, Header(include_in_schema=False, max_length=64)] = None,
               rank: RankQuery = 0,
               all_ranks: Annotated[bool, Query(description="the points of every rank (`ranks`)")] = False,
               ) -> StreamingResponse:
    """Server-sent events of the run's new points, log lines and status changes (see the module docstring)."""
    streams = getattr(request.app.state, "event_streams", None)
    if streams is None:
        streams = request.app.state.event_streams = [0]  # open streams (changed on the event loop only)
    if streams[0] >= MAX_STREAMS:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "events: too many open event streams, retry",
                            headers={"Retry-After": "5"})
    start = parse_cursor(last_event_id) or parse_cursor(cursor) or run_views.cursor_now(session)
    run_key = run.key
    session.close()  # the stream reads in short transactions of its own
    generator = _stream(request.app.state.read_sessions, run_key, start, streams, None if all_ranks else rank)
    return StreamingResponse(generator, media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


def _event(name: str, data: Any, cursor: tuple[int, int] | None = None) -> str:
    head = f"id: {cursor[0]}.{cursor[1]}\n" if cursor is not None else ""
    return f"{head}event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@dataclass
class _Poll:
    points: list
    lines: list
    state: tuple | None  # (status, end_time, last_heartbeat); None when the run is gone
    cursor: tuple[int, int]  # where the next poll starts
    skipped: bool = False  # too many new points: the cursor skipped to now


def _catch_up(read: Any, session: Any, run_key: int, after_id: int, most: int) -> tuple[list, int, bool]:
    """The run's rows since `after_id`, SCAN_ROWS rows of every run at a time, at most MAX_SCANS scans or `most`
    of the run's rows; the cursor to continue after, and whether everything written since was read."""
    found: list = []
    for _ in range(MAX_SCANS):
        rows, after_id, scanned = read(session, run_key, after_id, SCAN_ROWS)
        found.extend(rows)
        if scanned < SCAN_ROWS:
            return found, after_id, True
        if len(found) > most:
            break
    return found, after_id, False


def _poll(sessions: Any, run_key: int, cursor: tuple[int, int]) -> _Poll:
    with sessions() as session:
        points, point_cursor, caught_up = _catch_up(run_views.points_since, session, run_key, cursor[0], MAX_POINTS)
        lines, line_cursor, _ = _catch_up(run_views.lines_since, session, run_key, cursor[1], MAX_LINES)
        state = session.execute(select(Run.status, Run.end_time, Run.last_heartbeat).where(Run.key == run_key)).first()
        found = _Poll(points, lines[-MAX_LINES:], None if state is None else tuple(state), (point_cursor, line_cursor))
        if not caught_up or len(points) > MAX_POINTS:  # too far behind: skip to now, the page reloads its charts
            found.points, found.skipped = [], True
            found.cursor = (run_views.cursor_now(session)[0], line_cursor)
    return found


async def _stream(sessions: Any, run_key: int, cursor: tuple[int, int], streams: list[int],
                  rank: int | None) -> AsyncIterator[str]:
    """The events of one run: points of `rank`, or of every rank when None."""
    streams[0] += 1
    try:
        yield "retry: 500\n\n"
        deadline = time.monotonic() + STREAM_SECONDS
        quiet_since = time.monotonic()
        last_state = None
        while time.monotonic() < deadline:
            found = await asyncio.to_thread(_poll, sessions, run_key, cursor)
            if found.state is None:
                yield _event("status", {"status": "DELETED"}, cursor)
                return
            if found.skipped:
                yield _event("reset", {"reason": f"more than {MAX_POINTS} new points"}, found.cursor)
            points = _points_event(found.points, rank)
            if points:
                yield _event("points", points, (found.cursor[0], cursor[1]))
            if found.lines:
                yield _event("logs", {"lines": [{"id": i, "time": iso(t), "level": level, "message": message}
                                                for i, t, level, message in found.lines]}, found.cursor)
            cursor = found.cursor
            if found.state != last_state:
                last_state = found.state
                run_status, end_time, heartbeat = found.state
                yield _event("status", {"status": run_status, "end_time": iso(end_time) or None,
                                        "last_heartbeat": iso(heartbeat)}, cursor)
            if points or found.lines:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > KEEPALIVE_SECONDS:
                quiet_since = time.monotonic()
                yield ": keepalive\n\n"
            await asyncio.sleep(POLL_SECONDS)
    finally:
        streams[0] -= 1


def _points_event(points: list, rank: int | None) -> dict[str, Any] | None:
    """The `points` event of `rank` (None: every rank), or None when it has no points."""
    ranks: dict[int, dict[str, list[list]]] = {}
    for _id, point_rank, key, step, value, special, wall_time in points:
        if rank is None or point_rank == rank:
            series = ranks.setdefault(point_rank, {})
            series.setdefault(key, []).append([step, json_value(decode_value(value, special)), wall_time])
    if not ranks:
        return None
    if rank is None:
        return {"ranks": {str(r): series for r, series in sorted(ranks.items())}}
    return {"rank": rank, "series": ranks[rank]}
