"""One metric series of a run: `GET /api/runs/{run_id}/metrics/{key}`.

Two ways to read it:
- `max_points=N`: at most N points, M4-reduced (each step-range bucket keeps its first, last, min and max point,
  and its first NaN): a one-step spike survives any reduction. A series of at most N points comes back whole.
- `after_step` + `limit`: full fidelity, in step order; `next_after_step` is the `after_step` of the next page
  (null on the last page).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, status

from ..deps import ReadableRun, SessionDep
from ..reduction import MIN_MAX_POINTS, SeriesPoint
from ..repositories import series as series_repo
from ..schemas import MetricKey, SeriesOut, SeriesPointOut

router = APIRouter(prefix="/api", tags=["metrics"])
MAX_PAGE = 100_000


def points_out(points: list[SeriesPoint]) -> list[SeriesPointOut]:
    return [SeriesPointOut(step=p.step, value=p.value, wall_time=p.wall_time) for p in points]


@router.get("/runs/{run_id}/metrics/{key}", response_model=SeriesOut,
            responses={404: {"description": "no such run/key"}})
def get_series(run: ReadableRun, session: SessionDep, key: Annotated[MetricKey, Path()],
               max_points: Annotated[int | None, Query(ge=MIN_MAX_POINTS, le=MAX_PAGE)] = None,
               after_step: Annotated[int | None, Query(ge=-1)] = None,
               limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 10_000) -> SeriesOut:
    """A series reduced to `max_points`, or a page of it after `after_step` (at most `limit` points)."""
    if max_points is not None and after_step is not None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            "max_points: give max_points (a reduced view) or after_step (a page), not both")
    if max_points is not None:
        points, reduced = series_repo.reduced_series(session, run.id, key, max_points)
        next_after = None
    else:
        points = series_repo.series_page(session, run.id, key, after_step, limit)
        reduced = False
        next_after = points[-1].step if len(points) == limit else None
    if not points and after_step is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"key: run {run.id!r} has no metric {key!r}")
    return SeriesOut(run_id=run.id, key=key, reduced=reduced, points=points_out(points), next_after_step=next_after)
