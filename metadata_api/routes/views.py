"""ORM rows -> response bodies."""

from __future__ import annotations

from ..models import Run
from ..schemas import EndpointOut, RunOut


def run_out(run: Run) -> RunOut:
    experiment = run.experiment
    return RunOut(
        run_id=run.id, experiment_id=experiment.id, experiment=experiment.name, project=experiment.project.name,
        status=run.status, start_time=run.start_time, end_time=run.end_time, last_heartbeat=run.last_heartbeat,
        host=run.host, pid=run.pid, command=run.command, git_commit=run.git_commit, rank=run.rank,
        world_size=run.world_size, exporter_url=run.exporter_url,
        endpoints=[EndpointOut(rank=e.rank, url=e.url, host=e.host, updated_at=e.updated_at) for e in run.endpoints],
        params=run.params or {},
        tags={tag.key: tag.value for tag in run.tags}, context=run.context)
