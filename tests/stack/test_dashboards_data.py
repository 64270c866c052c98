"""Every dashboard query returns data for a real run.

A simulated two-rank run (real `TrainingMonitor`s, GPU readings replayed from an H200) is registered with the
real metadata API on a real Postgres; rank 0 is discovered through the API's http_sd and scraped, rank 1 pushes
to a real Pushgateway; a real Prometheus loads the repository's prometheus.yml and rules (addresses and intervals
overridden). Then every variable query and every panel query of every dashboard, with the variables set to that
run, runs against Prometheus or Postgres; a query without data fails.
"""

from __future__ import annotations

import contextlib
import math
import re
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
import requests
from repo_files import dashboards, panels
from stack_servers import api_post, render_prometheus_config
from support.api import run_api
from support.fixtures import H200_PROBE
from support.procs import Prometheus, fresh_postgres_database, run_prometheus, run_pushgateway

from devtools.nvml_replay import ReplaySource

pytestmark = pytest.mark.integration

EXPERIMENT = "dash-exp"
STEPS = 120
# What Grafana would substitute for its built-in interval variables with a 1 s scrape interval.
BUILTINS = {"__rate_interval": "4s", "__interval": "1s", "__range": "120s"}


@dataclass
class SimulatedRun:
    prometheus: Prometheus
    database_url: str
    run_id: str
    variables: dict[str, list[str]]
    start: float


def _replay_source(devices: int) -> ReplaySource:
    source = ReplaySource(H200_PROBE, devices=devices)
    source.seek(len(source.series) // 2)  # under load: SM/tensor activity > 0
    return source


def _rank_env(rank: int) -> dict[str, str]:
    return {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2"}


def _train(monitors: list, api_url: str, run_id: str) -> None:
    """~3 s of training on both ranks; a NaN auxiliary loss now and then; points also stored in the API."""
    points = []
    for step in range(STEPS):
        loss = 2.0 / (1 + step / 10)
        metrics = {"loss": loss, "accuracy": 1 - loss / 3, "epoch": step // 40,
                   "aux_loss": float("nan") if step % 25 == 24 else loss / 2}
        for monitor in monitors:
            monitor.log_metrics(metrics, step=step, samples=32, tokens=32 * 512)
        points += [{"key": key, "step": step, "value": value, "wall_time": time.time()}
                   for key, value in metrics.items() if key in ("loss", "accuracy")]
        if step == STEPS // 2:
            for monitor in monitors:
                monitor.log_checkpoint("mid", step=step)
            api_post(api_url, f"/api/runs/{run_id}/checkpoints",
                     {"name": "mid", "step": step, "epoch": step // 40, "uri": "file:///ckpt/mid.pt",
                      "size_bytes": 1024, "sha256": "0" * 64, "metrics": {"loss": loss}})
        time.sleep(0.025)
    api_post(api_url, f"/api/runs/{run_id}/metrics", {"batch_id": "dash-1", "points": points})


@contextlib.contextmanager
def _simulated_run(postgres_url: str, workdir: Path) -> Iterator[SimulatedRun]:
    from trainmon.exporter import TrainingMonitor

    run_id = f"dash-{uuid.uuid4().hex[:8]}"
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_postgres_database(postgres_url, prefix="stack"))
        api_url = stack.enter_context(run_api(database_url, workdir))
        pushgateway_url = stack.enter_context(run_pushgateway(workdir / "pushgateway"))
        monitors = [
            TrainingMonitor(EXPERIMENT, "dash-project", run_id=run_id, port=0, nvml_source=_replay_source(2),
                            sample_interval=0.25, handle_signals=False, env=_rank_env(0)),
            TrainingMonitor(EXPERIMENT, "dash-project", run_id=run_id, port=False, pushgateway_url=pushgateway_url,
                            push_interval=0.5, nvml_source=_replay_source(2), sample_interval=0.25,
                            handle_signals=False, env=_rank_env(1), keep_push_group=True),
        ]
        for monitor in monitors:
            stack.callback(monitor.finish)
        api_post(api_url, "/api/runs", {"experiment": EXPERIMENT, "project": "dash-project", "run_id": run_id,
                                        "rank": 0, "world_size": 2, "host": "node-a",
                                        "exporter_url": monitors[0].metrics_url, "params": {"lr": 0.001}})
        config = render_prometheus_config(api_url=api_url, pushgateway_url=pushgateway_url, alertmanager_url=None)
        prometheus = stack.enter_context(run_prometheus(config, workdir=workdir / "prometheus"))
        start = time.time()
        prometheus.wait_for(f'up{{job="trainmon-trainers", run_id="{run_id}"}} == 1', timeout=30)
        _train(monitors, api_url, run_id)
        # Until every recorded series has both ranks and the NaN has made an alert pending.
        prometheus.wait_for(f'rank:trainmon_step_duration_seconds:mean1m{{run_id="{run_id}"}}', timeout=30,
                            predicate=lambda result: len(result) == 2)
        prometheus.wait_for(f'ALERTS{{run_id="{run_id}", alertname="TrainmonLossNonFinite"}}', timeout=30)
        prometheus.wait_for(f'run:trainmon_step_duration_seconds:spread_ratio5m{{run_id="{run_id}"}}', timeout=30)
        variables = {"experiment": [EXPERIMENT], "run_id": [run_id], "key": ["loss"], "gpu": ["0", "1"]}
        yield SimulatedRun(prometheus, database_url, run_id, variables, start)


@pytest.fixture(scope="module")
def simulated_run(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedRun]:
    with _simulated_run(postgres_url, tmp_path_factory.mktemp("dashboards-data")) as run:
        yield run


def substitute(query: str, variables: dict[str, list[str]], multi: set[str], sql: bool) -> str:
    """Grafana's variable interpolation for the cases the dashboards use ($var, ${var}, built-ins)."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        values = variables[name]
        if sql:
            return ",".join(f"'{v}'" for v in values) if name in multi else values[0]
        return "|".join(re.escape(v) for v in values) if len(values) > 1 else values[0]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def _has_value(result: list[dict]) -> bool:
    for series in result:
        samples = series.get("values") or [series.get("value")]
        if any(sample and not math.isnan(float(sample[1])) for sample in samples):
            return True
    return False


def _label_values(prometheus: Prometheus, query: str) -> set[str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"unsupported variable query {query!r}"
    answer = requests.get(f"{prometheus.url}/api/v1/series", params={"match[]": match.group(1)}, timeout=10).json()
    return {series[match.group(2)] for series in answer["data"] if match.group(2) in series}


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_variable_and_panel_query_returns_data(simulated_run: SimulatedRun, name: str) -> None:
    board = dashboards()[name]
    variables = simulated_run.variables
    multi = {v["name"] for v in board["templating"]["list"] if v.get("multi") or v.get("includeAll")}
    missing = []
    for variable in board["templating"]["list"]:
        query = substitute(variable["query"], variables, multi, sql=False)
        found = _label_values(simulated_run.prometheus, query)
        if not set(variables[variable["name"]]) <= found:
            missing.append(f"variable {variable['name']}: {query} -> {sorted(found)}")
    now = time.time()
    for panel in panels(board):
        for target in panel.get("targets", []):
            if target.get("rawSql"):
                query = substitute(target["rawSql"], variables, multi, sql=True)
                with psycopg.connect(simulated_run.database_url.replace("+psycopg", "")) as connection:
                    rows = connection.execute(query).fetchall()
                has_data = bool(rows)
            else:
                query = substitute(target["expr"], variables, multi, sql=False)
                if target.get("instant"):
                    result = simulated_run.prometheus.query(query, at=now)
                else:
                    result = simulated_run.prometheus.query_range(query, simulated_run.start, now, step=1)
                has_data = _has_value(result)
            if not has_data:
                missing.append(f"panel {panel['title']!r} {target['refId']}: {query}")
    assert not missing, f"{name}: queries without data for run {simulated_run.run_id}:\n" + "\n".join(missing)


def test_substitution_is_not_vacuous(simulated_run: SimulatedRun) -> None:
    """A run that does not exist gets no data: the check above can fail."""
    query = substitute('trainmon_metric_value{run_id=~"$run_id", key="$key"}', {"run_id": ["nope"], "key": ["loss"]},
                       set(), sql=False)
    assert not _has_value(simulated_run.prometheus.query_range(query, simulated_run.start, time.time(), step=1))
