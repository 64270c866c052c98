"""One metric series of a run: `GET /api/runs/{run_id}/metrics/{key}`.

Two ways to read it:
- `max_points=N`: at most N points, M4-reduced (each step-range bucket keeps its first, last, min and max point,
  and its first NaN): a one-step spike survives any reduction. A series of at most N points comes back whole.
- `after_step` + `limit`: full fidelity, in step order; `next_after_step` is the `after_step` of the next page
  (null on the last page).
Either way `min_step` and `max_step` (inclusive) narrow the read to a step range, in SQL: a chart zoomed on a range
of a long series asks for that range at full resolution (or M4-reduced over it when it still holds more points).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from .. import errors
from ..deps import ReadableRun, SessionDep
from ..reduction import MIN_MAX_POINTS, SeriesPoint
from ..repositories import series as series_repo
from ..schemas import MAX_STEP, MetricKey, RankQuery, SeriesOut, SeriesPointOut, invalid

router = APIRouter(prefix="/api", tags=["metrics"])
MAX_PAGE = 100_000


def points_out(points: list[SeriesPoint]) -> list[SeriesPointOut]:
    return [SeriesPointOut(step=p.step, value=p.value, wall_time=p.wall_time) for p in points]


@router.get("/runs/{run_id}/metrics/{key}", response_model=SeriesOut,
            responses={404: errors.error("no such run, or the run has no such metric")})
def get_series(run: ReadableRun, session: SessionDep, key: Annotated[MetricKey, Path()],
               max_points: Annotated[int | None, Query(ge=MIN_MAX_POINTS, le=MAX_PAGE)] = None,
               after_step: Annotated[int | None, Query(ge=-1, le=MAX_STEP)] = None,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10_000,
               min_step: Annotated[int | None, Query(ge=0, le=MAX_STEP)] = None,
               max_step: Annotated[int | None, Query(ge=0, le=MAX_STEP)] = None, rank: RankQuery = 0) -> SeriesOut:
    """A series of one rank (rank 0 by default) reduced to `max_points`, or a page of it after `after_step` (at
    most `limit` points); only the steps in [`min_step`, `max_step`] when given."""
    series = (run.key, rank, key)
    if max_points is not None and after_step is not None:
        raise invalid(("query", "max_points"), "give max_points (a reduced view) or after_step (a page), not both",
                      max_points)
    if min_step is not None and max_step is not None and min_step > max_step:
        raise invalid(("query", "max_step"), "must be >= min_step", max_step)
    if max_points is not None:
        points, reduced = series_repo.reduced_series(session, series, max_points, min_step, max_step)
        next_after = None
    else:
        start = after_step if min_step is None else max(min_step - 1, -1 if after_step is None else after_step)
        points = series_repo.series_page(session, series, start, limit, max_step)
        reduced = False
        next_after = points[-1].step if len(points) == limit else None
    ranged = min_step is not None or max_step is not None  # an empty range of a series that exists: no points
    if not points and after_step is None and (
            not ranged or not series_repo.series_page(session, series, None, 1)):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"key: run {run.id!r} has no metric {key!r} at rank {rank}")
    return SeriesOut(run_id=run.id, rank=rank, key=key, reduced=reduced, points=points_out(points),
                     next_after_step=next_after)
