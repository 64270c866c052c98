"""A simulated two-rank run seen by a real Prometheus: what the dashboard, rule-input and federation tests query.

Real `TrainingMonitor`s with GPU readings replayed from an H200; the run is registered with the real metadata API
on a real Postgres; rank 0 is discovered through the API's http_sd and scraped, rank 1 pushes to a real
Pushgateway; a real Prometheus loads the repository's prometheus.yml and rules (addresses and intervals
overridden, plus what `adapt_config` changes: a cluster's external label and remote_write in the federation test).
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from stack_servers import api_post, render_prometheus_config
from support.api import run_api
from support.fixtures import H200_PROBE
from support.procs import Prometheus, fresh_postgres_database, run_prometheus, run_pushgateway

from devtools.nvml_replay import ReplaySource

EXPERIMENT = "dash-exp"
STEPS = 120
WORLD_SIZE = 2


@dataclass
class SimulatedRun:
    prometheus: Prometheus
    database_url: str
    run_id: str
    variables: dict[str, list[str] | None]  # dashboard variable -> values (None: "All")
    start: float
    api_url: str
    pushgateway_url: str


def _replay_source(devices: int) -> ReplaySource:
    source = ReplaySource(H200_PROBE, devices=devices)
    source.seek(len(source.series) // 2)  # under load: SM/tensor activity > 0
    return source


def _rank_env(rank: int) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(WORLD_SIZE),
            "LOCAL_WORLD_SIZE": str(WORLD_SIZE)}


def _train(monitors: list, api_url: str, run_id: str, experiment: str) -> None:
    """~3 s of training on both ranks (timed phases: compute, then a collective); a NaN auxiliary loss now and
    then; points also stored in the API."""
    points = []
    for step in range(STEPS):
        loss = 2.0 / (1 + step / 10)
        metrics = {"loss": loss, "accuracy": 1 - loss / 3, "epoch": step // 40,
                   "aux_loss": float("nan") if step % 25 == 24 else loss / 2}
        for monitor in monitors:
            with monitor.phase("forward"):
                time.sleep(0.001 * (1 + monitor.topology.rank))
            with monitor.phase("allreduce"):
                pass
            monitor.log_metrics(metrics, step=step, samples=32, tokens=32 * 512)
        points += [{"key": key, "step": step, "value": value, "wall_time": time.time()}
                   for key, value in metrics.items() if key in ("loss", "accuracy")]
        if step == STEPS // 2:
            for monitor in monitors:
                monitor.log_checkpoint("mid", step=step)
            api_post(api_url, f"/api/runs/{run_id}/checkpoints",
                     {"name": "mid", "step": step, "epoch": step // 40, "uri": "file:///ckpt/mid.pt",
                      "size_bytes": 1024, "sha256": "0" * 64, "metrics": {"loss": loss}})
        time.sleep(0.02)
    for rank in range(WORLD_SIZE):  # each rank's history is its own series (the SQL panels pick ranks)
        api_post(api_url, f"/api/runs/{run_id}/metrics", {"batch_id": f"{experiment}-{rank}", "rank": rank,
                                                         "points": points})


@contextlib.contextmanager
def simulated_run(postgres_url: str, workdir: Path, experiment: str = EXPERIMENT,
                  adapt_config: Callable[[str], str] = lambda config: config,
                  prometheus_args: Sequence[str] = ()) -> Iterator[SimulatedRun]:
    """The run, trained and scraped, once every recorded series has both ranks and the NaN made an alert pending.
    The monitors' own API client is off (`mode="disabled"`): the test registers both ranks and stores points."""
    from trainmon.exporter import TrainingMonitor

    run_id = f"dash-{uuid.uuid4().hex[:8]}"
    workdir.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database(postgres_url, prefix="stack"))
        api_url = stack.enter_context(run_api(database_url, workdir))
        pushgateway_url = stack.enter_context(run_pushgateway(workdir / "pushgateway"))
        monitors = [
            TrainingMonitor(experiment, "dash-project", run_id=run_id, port=0, nvml_source=_replay_source(2),
                            sample_interval=0.25, handle_signals=False, env=_rank_env(0), mode="disabled"),
            TrainingMonitor(experiment, "dash-project", run_id=run_id, port=False, pushgateway_url=pushgateway_url,
                            push_interval=0.5, nvml_source=_replay_source(2), sample_interval=0.25,
                            handle_signals=False, env=_rank_env(1), keep_push_group=True, mode="disabled"),
        ]
        for monitor in monitors:
            stack.callback(monitor.finish)
        for rank, monitor in enumerate(monitors):
            api_post(api_url, "/api/runs", {"experiment": experiment, "project": "dash-project", "run_id": run_id,
                                            "rank": rank, "world_size": WORLD_SIZE, "host": f"node-{rank}",
                                            "exporter_url": monitor.metrics_url, "params": {"lr": 0.001}})
        config = render_prometheus_config(api_url=api_url, pushgateway_url=pushgateway_url, alertmanager_url=None)
        prometheus = stack.enter_context(run_prometheus(adapt_config(config), workdir=workdir / "prometheus",
                                                        extra_args=prometheus_args))
        start = time.time()
        prometheus.wait_for(f'up{{job="trainmon-trainers", run_id="{run_id}"}} == 1', timeout=30)
        _train(monitors, api_url, run_id, experiment)
        # Until every recorded series has both ranks and the NaN has made an alert pending.
        prometheus.wait_for(f'rank:trainmon_step_duration_seconds:mean1m{{run_id="{run_id}"}}', timeout=30,
                            predicate=lambda result: len(result) == 2)
        # (a few evaluations of it: a range query ending now must see it, not only the newest instant)
        prometheus.wait_for(f'count_over_time(ALERTS{{run_id="{run_id}", alertname="TrainmonLossNonFinite"}}[1m]) >= 3',
                            timeout=30)
        prometheus.wait_for(f'run:trainmon_step_duration_seconds:spread_ratio5m{{run_id="{run_id}"}}', timeout=30)
        variables = {"cluster": None, "experiment": [experiment], "run_id": [run_id], "key": ["loss"],
                     "gpu": ["0", "1"], "rank": ["0", "1"]}
        yield SimulatedRun(prometheus, database_url, run_id, variables, start, api_url, pushgateway_url)
