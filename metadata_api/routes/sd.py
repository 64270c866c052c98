"""Prometheus HTTP service discovery (`http_sd_configs`): every registered exporter endpoint (one per rank) of
RUNNING runs, one target group per endpoint.

Each target group carries `run_id`, `experiment`, `project`, `rank` (and `__metrics_path__`/`__scheme__`
from the registered URL). The exporter puts the same run labels on its series, so the scrape job should set
`honor_labels: true` (otherwise Prometheus renames the scraped ones to `exported_*`).
Endpoints the exporter URL policy refuses (`services/url_policy.py`: link-local, cloud metadata, credentials),
e.g. registered before it existed, are left out.

`DELETE /api/runs/{run_id}/endpoints/{rank}`: a rank that finishes while others still run (rank 0's final
evaluation) leaves discovery, so Prometheus stops scraping it instead of finding it down (TrainmonExporterDown).
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Path, Response, status

from ..deps import CrashDetectorDep, PrincipalDep, SessionDep, WritableRun
from ..models import Run, RunEndpoint
from ..repositories import runs as run_repo
from ..schemas.base import INT64_MAX
from ..services.url_policy import check_exporter_url

router = APIRouter(prefix="/api", tags=["service discovery"])


@router.get("/sd")
def service_discovery(session: SessionDep, principal: PrincipalDep,
                      crashes: CrashDetectorDep) -> list[dict[str, Any]]:
    runs = run_repo.running_runs_with_endpoints(session)
    if crashes.refresh_if_stale(session, runs):
        runs = run_repo.running_runs_with_endpoints(session)
    if not principal.open:
        runs = [run for run in runs if run.experiment.project_id == principal.project_id]
    groups = (target_group(run, endpoint) for run in runs for endpoint in run.endpoints)
    return [group for group in groups if group is not None]


@router.delete("/runs/{run_id}/endpoints/{rank}", status_code=status.HTTP_204_NO_CONTENT, tags=["runs"])
def deregister_endpoint(run: WritableRun, session: SessionDep,
                        rank: Annotated[int, Path(ge=0, le=INT64_MAX)]) -> Response:
    """A rank that finished leaves discovery: its endpoint is forgotten, whatever the run's status. 204 whether
    or not the rank had one (a retry is harmless); registering again (`POST /api/runs`) brings it back."""
    run_repo.drop_endpoint(session, run.key, rank)
    session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def target_group(run: Run, endpoint: RunEndpoint) -> dict[str, Any] | None:
    """The http_sd target group of one rank's endpoint, or None when its URL has no host or breaks the policy."""
    try:
        check_exporter_url(endpoint.url)
    except ValueError:
        return None
    url = urlsplit(endpoint.url)
    if not url.hostname:
        return None
    port = url.port or (443 if url.scheme == "https" else 80)
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    labels = {"run_id": run.id, "experiment": run.experiment.name, "project": run.experiment.project.name,
              "rank": str(endpoint.rank)}
    if url.path and url.path != "/metrics":
        labels["__metrics_path__"] = url.path
    if url.scheme == "https":
        labels["__scheme__"] = "https"
    return {"targets": [f"{host}:{port}"], "labels": labels}
