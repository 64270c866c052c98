"""Compare runs (or every run of some experiments) on chosen keys: `GET /api/compare`.

`align=step` puts every series on the step axis (`x` = step); `align=time` on elapsed wall time (`x` = seconds
since the run's first returned point), so runs started at different moments overlay. Each series is M4-reduced to
`max_points` (default 2000), keeping spikes. `ranks` picks the ranks of each run (default rank 0; `all` for every
rank that logged points): the ranks of one run compare like runs.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query, status
from trainmon.common.naming import MAX_KEY_LENGTH, normalize_key

from .. import auth, errors
from ..deps import PrincipalDep, ProjectQuery, SessionDep, require_access, resolve_run
from ..models import RUN_ID_LENGTH, Experiment, Run
from ..reduction import MIN_MAX_POINTS
from ..repositories import run_views
from ..repositories import runs as run_repo
from ..repositories import series as series_repo
from ..schemas import INT32_MAX, MAX_RANK, AlignedPoint, ComparedSeries, Comparison, Text, invalid

router = APIRouter(prefix="/api", tags=["metrics"])
MAX_RUNS = 100
MAX_KEYS = 20
RANK = re.compile(r"[0-9]{1,10}")  # ASCII digits only (str.isdigit takes other scripts' digits too)
MAX_SERIES = 2000  # runs x ranks x keys in one comparison


@router.get("/compare", response_model=Comparison,
            responses={404: errors.error("unknown run or experiment"),
                       409: errors.error("a run id of `runs` exists in several projects: give `project`")})
def compare(session: SessionDep, principal: PrincipalDep,
            keys: Annotated[Text, Query(min_length=1, max_length=MAX_KEYS * (MAX_KEY_LENGTH + 1))],
            runs: Annotated[Text | None, Query(max_length=MAX_RUNS * (RUN_ID_LENGTH + 1))] = None,
            experiments: Annotated[Text | None, Query(max_length=MAX_RUNS * 11)] = None,
            align: Literal["step", "time"] = "step",
            max_points: Annotated[int, Query(ge=MIN_MAX_POINTS, le=100_000)] = 2000,
            project: ProjectQuery = None,
            ranks: Annotated[Text, Query(max_length=20_000, description="comma-separated ranks, or `all`")] = "0",
            ) -> Comparison:
    """Series of `keys` (comma-separated) for `runs=a,b` or `experiments=1,2`, aligned by step or by time; run ids
    are looked up as in `/api/runs/{run_id}` (the token's project, or `project`)."""
    key_list = _keys(keys)
    chosen = _chosen_runs(session, principal, runs, experiments, project)
    for run in chosen:
        require_access(principal, run.experiment.project_id, write=False)
    rank_list = _ranks(ranks)
    chosen_ranks = {run.key: rank_list or run_views.metric_ranks(session, run.key) for run in chosen}
    if sum(len(r) for r in chosen_ranks.values()) * len(key_list) > MAX_SERIES:
        raise invalid(("query", "ranks"), f"at most {MAX_SERIES} series (runs x ranks x keys) a comparison", ranks)
    series = []
    for run in chosen:
        run_series = []
        for rank in chosen_ranks[run.key]:
            for key in key_list:
                points, reduced = series_repo.reduced_series(session, (run.key, rank, key), max_points)
                run_series.append((rank, key, points, reduced))
        origin = min((p.wall_time for *_head, points, _r in run_series for p in points), default=0.0)
        for rank, key, points, reduced in run_series:
            aligned = [AlignedPoint(x=float(p.step) if align == "step" else p.wall_time - origin, step=p.step,
                                    value=p.value, wall_time=p.wall_time) for p in points]
            series.append(ComparedSeries(run_id=run.id, rank=rank, experiment_id=run.experiment_id,
                                         experiment=run.experiment.name, key=key, reduced=reduced, points=aligned))
    return Comparison(align=align, keys=key_list, runs=[run.id for run in chosen], series=series)


def _keys(text: str) -> list[str]:
    keys = []
    for raw in _split(text):
        key = normalize_key(raw)
        if key is None:
            raise invalid(("query", "keys"), f"{raw!r} is not a valid metric key", text)
        if key not in keys:
            keys.append(key)
    if not keys or len(keys) > MAX_KEYS:
        raise invalid(("query", "keys"), f"give 1 to {MAX_KEYS} comma-separated keys", text)
    return keys


def _ranks(text: str) -> list[int]:
    """The ranks asked for, in order; [] for `all`."""
    if text.strip() == "all":
        return []
    found: list[int] = []
    for part in _split(text):
        if not RANK.fullmatch(part) or int(part) > MAX_RANK:
            raise invalid(("query", "ranks"), f"{part!r} is not a rank (0 to {MAX_RANK}); or give `all`", text)
        if int(part) not in found:
            found.append(int(part))
    if not found:
        raise invalid(("query", "ranks"), "give comma-separated ranks, or `all`", text)
    return found


def _chosen_runs(session: SessionDep, principal: auth.Principal, runs: str | None, experiments: str | None,
                 project: str | None) -> list[Run]:
    if (runs is None) == (experiments is None):
        raise invalid(("query", "runs"), "give either runs=a,b or experiments=1,2 (one of them)", runs)
    chosen: list[Run] = []
    if runs is not None:
        for run_id in _split(runs):
            run = resolve_run(session, principal, run_id, project, field="runs")
            if run not in chosen:
                chosen.append(run)
    else:
        for text in _split(experiments or ""):
            experiment_id = _experiment_id(text)
            if session.get(Experiment, experiment_id) is None:
                raise HTTPException(status.HTTP_404_NOT_FOUND, f"experiments: no experiment {experiment_id}")
            chosen.extend(run_repo.runs_of_experiment(session, experiment_id))
    if not chosen or len(chosen) > MAX_RUNS:
        raise invalid(("query", "runs" if runs is not None else "experiments"),
                      f"the comparison needs 1 to {MAX_RUNS} runs, got {len(chosen)}", runs or experiments)
    return chosen


def _experiment_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= INT32_MAX:
        raise invalid(("query", "experiments"), f"{text!r} is not an experiment id (1 to {INT32_MAX})", text)
    return value


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]

