"""The dashboard's pages (HTML, server-rendered; `web/templates/`), each with its state in the query string:

- `/`: runs, filtered, sorted and paged in SQL (`web.runs_query` for the parameters, `repositories.run_table`);
- `/runs/{run_id}` (`?project=` when the id exists in several projects): one run, its charts, files and logs;
  `?rank=N` draws rank N's series (default 0), `?rank=all` overlays every rank's (the first MAX_OVERLAY);
- `/compare?runs=a,b`: the runs' shared keys overlaid, their differing params, a parallel-coordinates view;
  `&ranks=0,3` or `&ranks=all` overlays those ranks of each run (default rank 0);
- `/login?next=`: asks for an API token once (`web.session`).

Pages see what the API shows the same caller (`deps.resolve_run`, the token's project); without a token, while
tokens exist, a page redirects to the login page. Every answer carries `Server-Timing: app;dur=<ms>`.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Request, status
from fastapi.responses import HTMLResponse

from .. import auth
from ..deps import CrashDetectorDep, SessionDep, SettingsDep, resolve_run
from ..models import Run, TokenScope
from ..repositories import run_table, run_views
from ..schemas import MAX_RANK
from ..web import rendering, runs_query
from ..web import session as web_session

router = APIRouter(include_in_schema=False)
MAX_COMPARED = 20
MAX_OVERLAY = 64  # lines a chart overlays (ranks of a run, or runs x ranks on the compare page)
MAX_RANK_OPTIONS = 1024  # ranks the run page's picker lists (any other is `?rank=N`)
RANK = re.compile(r"[0-9]{1,10}")  # ASCII digits only
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22")


def _page(request: Request, template: str, context: dict[str, Any], started: float,
          principal: auth.Principal | None) -> HTMLResponse:
    context = {"signed_in": principal is not None and not principal.open, **context}
    response = rendering.render(request, template, context, started)
    web_session.ensure_csrf_cookie(request, response)
    return response


def _error(request: Request, error: HTTPException, started: float) -> HTMLResponse:
    if error.status_code == status.HTTP_303_SEE_OTHER:
        raise error
    return rendering.render(request, "error.html", {"status": error.status_code, "detail": error.detail,
                                                    "signed_in": False}, started, status_code=error.status_code)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, session: SessionDep, next: str | None = None) -> HTMLResponse:  # noqa: A002
    started = time.perf_counter()
    context = {"next": web_session.safe_next(next), "tokens_exist": auth.tokens_exist(session)}
    return _page(request, "login.html", context, started, None)


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, session: SessionDep, crashes: CrashDetectorDep) -> HTMLResponse:
    started = time.perf_counter()
    principal = web_session.page_principal(request, session)
    crashes.refresh_stale_runs(session)
    error = None
    try:
        query = runs_query.parse({name: request.query_params.getlist(name) for name in request.query_params})
    except runs_query.QueryError as problem:
        error, query = str(problem), runs_query.RunsQuery()
    keys, total = run_table.page_keys(session, query, principal.project_id)
    rows = run_table.page_rows(session, keys, query.metrics, query.params)
    pages = max(1, -(-total // runs_query.PAGE_SIZE))
    context = {"query": query, "rows": rows, "total": total, "pages": pages, "error": error,
               "tree": run_table.experiment_tree(session, principal.project_id),
               "statuses": ("RUNNING", "COMPLETED", "FAILED", "CRASHED"), "sort_name": runs_query.sort_name}
    return _page(request, "runs.html", context, started, principal)


def _flatten(params: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(params, dict):
        return {prefix: params} if prefix else {}
    flat: dict[str, Any] = {}
    for key, value in params.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) and value:
            flat.update(_flatten(value, path))
        else:
            flat[path] = value
    return flat


def key_groups(keys: list[str]) -> list[tuple[str, list[str]]]:
    """Keys grouped by their first `_`-separated segment (`train_loss` -> train); keys without one: `other`."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        head, sep, _rest = key.partition("_")
        groups[head if sep and head else "other"].append(key)
    return sorted(groups.items(), key=lambda item: (item[0] == "other", item[0]))


def _artifact_groups(run: Run, artifacts: list) -> dict[str, Any]:
    by_kind: dict[str, dict[str, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for artifact in artifacts:
        by_kind[artifact.kind][artifact.name].append({
            "id": artifact.id, "step": artifact.step, "size": artifact.size_bytes, "sha256": artifact.sha256,
            "media_type": artifact.media_type, "metadata": artifact.meta or {}})
    return {kind: dict(names) for kind, names in by_kind.items()}


def _links(settings: Any, run: Run) -> dict[str, str]:
    links = {}
    prometheus = getattr(settings, "prometheus_url", None)
    grafana = getattr(settings, "grafana_url", None)
    if prometheus:
        expression = f'trainmon_metric_value{{run_id="{run.id}"}}'
        links["Prometheus"] = (f"{prometheus.rstrip('/')}/graph?" +
                               urlencode({"g0.expr": expression, "g0.tab": "0", "g0.range_input": "1h"}))
    if grafana:
        links["Grafana"] = (f"{grafana.rstrip('/')}/d/trainmon-overview/training-overview?"
                            f"var-experiment={quote(run.experiment.name)}&var-run_id={quote(run.id)}")
    return links


def _rank(text: str) -> int | None:
    """A rank of the query string, or None when `text` is not one."""
    text = text.strip()
    return int(text) if RANK.fullmatch(text) and int(text) <= MAX_RANK else None


def _rank_view(session: SessionDep, run: Run, wanted: str | None) -> dict[str, Any]:
    """The run page's rank view: rank 0 (the default), rank N, or `all` (an overlay of the first MAX_OVERLAY
    ranks); its keys (of that rank, or of every overlaid rank), and the picker's options (shown when the run has
    several ranks, or when another view than rank 0 was asked for)."""
    wanted = (wanted or "").strip()
    view: int | str | None = 0 if not wanted else "all" if wanted == "all" else _rank(wanted)
    if view is None:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            f"rank: {wanted!r} is not a rank (0 to {MAX_RANK}); or give rank=all")
    ranks = run_views.metric_ranks(session, run.key)
    if view == "all":
        shown = ranks[:MAX_OVERLAY]
        keys = sorted({key for rank in shown for key in run_views.metric_keys(session, run.key, rank)})
    else:
        shown = [view]
        keys = run_views.metric_keys(session, run.key, view)
    options = ranks[:MAX_RANK_OPTIONS]
    if view != "all" and view not in options:
        options = sorted([*options, view])
    return {"rank": view, "ranks": shown, "rank_total": len(ranks), "rank_options": options, "keys": keys,
            "rank_picker": len(ranks) > 1 or view != 0}


@router.get("/runs/{run_id}", response_class=HTMLResponse)
def run_page(request: Request, run_id: str, session: SessionDep, crashes: CrashDetectorDep,
             settings: SettingsDep, project: str | None = None, rank: str | None = None) -> HTMLResponse:
    started = time.perf_counter()
    principal = web_session.page_principal(request, session)
    try:
        run = resolve_run(session, principal, run_id, project)
        if crashes.refresh_if_stale(session, [run]):
            run = resolve_run(session, principal, run_id, project)
        ranks = _rank_view(session, run, rank)
    except HTTPException as error:
        return _error(request, error, started)
    cursor = run_views.cursor_now(session)
    keys = ranks.pop("keys")
    project_name = run.experiment.project.name
    data = {"run_id": run.id, "project": project_name, "status": run.status,
            "start": rendering.iso(run.start_time), "end": rendering.iso(run.end_time) or None,
            "heartbeat": rendering.iso(run.last_heartbeat), "cursor": f"{cursor[0]}.{cursor[1]}",
            "artifacts": _artifact_groups(run, run_views.artifacts(session, run.key)),
            "can_write": principal.open or principal.scope == TokenScope.WRITE,
            "rank": ranks["rank"], "ranks": ranks["ranks"], "rank_picker": ranks["rank_picker"],
            "max_overlay": MAX_OVERLAY}
    context = {"run": run, "project": project_name, "params": sorted(_flatten(run.params or {}).items()),
               "tags": {tag.key: tag.value for tag in run.tags}, "notes": run_views.notes(session, run.key),
               "groups": key_groups(keys), "key_count": len(keys),
               "checkpoints": run_views.checkpoints(session, run.key), "links": _links(settings, run),
               "data": data, "can_write": data["can_write"], **ranks}
    return _page(request, "run.html", context, started, principal)


def _compared_ranks(text: str | None) -> tuple[list[int] | None, str | None]:
    """`ranks=` of the compare page: the ranks asked for ([0] by default; None for `all`), and the problem with
    `text` when it is not a comma-separated list of ranks or `all` (then rank 0)."""
    text = (text or "").strip()
    if text == "all":
        return None, None
    ranks = [_rank(part) for part in text.split(",") if part.strip()]
    if not ranks or None in ranks:
        return [0], None if not text else f"ranks: {text!r} is not a list of ranks (0 to {MAX_RANK}) or all"
    return list(dict.fromkeys(rank for rank in ranks if rank is not None)), None


@router.get("/compare", response_class=HTMLResponse)
def compare_page(request: Request, session: SessionDep, project: str | None = None,
                 metric: str | None = None, ranks: str | None = None) -> HTMLResponse:
    started = time.perf_counter()
    principal = web_session.page_principal(request, session)
    wanted = [part.strip() for value in request.query_params.getlist("runs") for part in value.split(",")
              if part.strip()]
    wanted = list(dict.fromkeys(wanted))
    if not wanted or len(wanted) > MAX_COMPARED:
        problem = HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                                f"runs: choose 1 to {MAX_COMPARED} runs to compare (runs=a,b)")
        return _error(request, problem, started)
    try:
        runs = [resolve_run(session, principal, run_id, project, field="runs") for run_id in wanted]
    except HTTPException as error:
        return _error(request, error, started)
    asked, ranks_error = _compared_ranks(ranks)
    by_rank = asked != [0]  # the default (rank 0 of each run) is labelled by run only, as before ranks existed
    per_run = max(1, MAX_OVERLAY // len(runs))
    run_ranks: list[list[int]] = []  # the ranks drawn of each run: at most MAX_OVERLAY lines a chart in all
    capped = False
    for run in runs:
        present = run_views.metric_ranks(session, run.key) if by_rank else [0]
        logged = set(present)
        chosen = present if asked is None else [rank for rank in asked if rank in logged]
        capped = capped or len(chosen) > per_run
        run_ranks.append(chosen[:per_run])
    key_sets = [run_views.metric_keys(session, run.key) if not by_rank else
                sorted({key for rank in chosen for key in run_views.metric_keys(session, run.key, rank)})
                for run, chosen in zip(runs, run_ranks, strict=True)]
    shared = [key for key in key_sets[0] if all(key in keys for keys in key_sets[1:])]
    if metric not in shared:
        metric = next((k for k in shared if k.startswith("val_") and "loss" in k), None) or \
            next((k for k in shared if "loss" in k), shared[0] if shared else None)
    flat = [_flatten(run.params or {}) for run in runs]
    paths = sorted({path for params in flat for path in params})
    differing = [(path, [params.get(path) for params in flat]) for path in paths
                 if len({repr(params.get(path, "\0missing")) for params in flat}) > 1]
    finals = {}
    if metric:
        rows = run_table.page_rows(session, [run.key for run in runs], [metric], [])
        finals = {row.run.key: row.metrics.get(metric) for row in rows}
    members = [{"run_id": run.id, "project": run.experiment.project.name, "experiment": run.experiment.name,
                "status": run.status, "color": PALETTE[index % len(PALETTE)], "ranks": run_ranks[index],
                "params": {path: values[index] for path, values in differing},
                "final": None if finals.get(run.key) is None else finals[run.key].last}
               for index, run in enumerate(runs)]
    ranks_text = "all" if asked is None else ",".join(map(str, asked))
    data = {"runs": members, "keys": shared, "metric": metric, "project": project, "by_rank": by_rank,
            "axes": [path for path, values in differing
                     if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)]}
    context = {"runs": runs, "members": members, "shared": shared, "differing": differing, "metric": metric,
               "data": data, "project": project, "groups": key_groups(shared), "by_rank": by_rank,
               "ranks_text": ranks_text, "ranks_error": ranks_error, "per_run": per_run if capped else None}
    return _page(request, "compare.html", context, started, principal)
