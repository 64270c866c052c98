"""Issue 11: ranks that finish before rank 0 are not "exporter down"; a rank that dies still is.

Real servers on 127.0.0.1: the metadata API (SQLite), a Prometheus with the repository's config (the trainers
discovered through the API's http_sd, refreshed every second) and rules with time compressed 20x (`for: 2m` ->
6 s), and three real TrainingMonitors of one run, registered with the API by the SDK itself. Rank 1 finishes:
its `finish()` takes it out of discovery (`DELETE /api/runs/{run_id}/endpoints/1`), then stops its /metrics
server. Rank 2 dies: its server stops and it stays registered. Rank 0 goes on (its final evaluation).
TrainmonExporterDown fires for rank 2, never for rank 1, whose target leaves discovery.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import pytest
import requests
from stack_servers import render_prometheus_config, render_scaled_rules
from support.api import run_api
from support.procs import run_prometheus

pytestmark = pytest.mark.integration

RUN_ID = "rank-finish"
RANKS = 3


def _monitor(rank: int, api_url: str, spool: Path) -> object:
    from trainmon.exporter import TrainingMonitor

    env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(RANKS), "LOCAL_WORLD_SIZE": str(RANKS)}
    return TrainingMonitor("finish-exp", "proj", run_id=RUN_ID, port=0, gpu=False, system=False, api_url=api_url,
                           spool_dir=str(spool), handle_signals=False, env=env)


def _exporter_down(prometheus: object, state: str) -> set[str]:
    return {series["metric"]["rank"] for series in
            prometheus.query(f'ALERTS{{alertname="TrainmonExporterDown", alertstate="{state}", run_id="{RUN_ID}"}}')}


def test_a_finished_rank_is_not_down_a_dead_one_is(tmp_path: Path) -> None:
    with contextlib.ExitStack() as stack:
        api_url = stack.enter_context(run_api(f"sqlite:///{tmp_path / 'api.db'}", tmp_path))
        monitors = [_monitor(rank, api_url, tmp_path / "spool") for rank in range(RANKS)]
        for monitor in monitors:
            stack.callback(monitor.finish)
        rules = render_scaled_rules(tmp_path / "rules", 1 / 20)
        config = render_prometheus_config(api_url=api_url, pushgateway_url=None, alertmanager_url=None,
                                          rules_dir=rules)
        prometheus = stack.enter_context(run_prometheus(config, workdir=tmp_path / "prometheus"))
        prometheus.wait_for(f'up{{job="trainmon-trainers", run_id="{RUN_ID}"}} == 1', timeout=30,
                            predicate=lambda result: len(result) == RANKS)

        # Rank 1 finishes (leaves discovery, then stops serving). Rank 2 dies without a word.
        monitors[1].finish()
        assert [endpoint["rank"] for endpoint in requests.get(f"{api_url}/api/runs/{RUN_ID}", timeout=10)
                .json()["endpoints"]] == [0, 2]
        monitors[2].server.stop()

        firing: set[str] = set()
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and "2" not in firing:
            firing |= _exporter_down(prometheus, "firing")
            assert "1" not in firing, "a rank that finished and deregistered was reported down"
            time.sleep(0.5)
        assert firing == {"2"}, f"the dead rank never fired TrainmonExporterDown (firing: {firing})"

        # Long after the finish: rank 1 is gone from discovery (no `up` at all), never fired; rank 0 still up.
        time.sleep(8)
        assert "1" not in _exporter_down(prometheus, "firing") | _exporter_down(prometheus, "pending")
        ranks = {target["labels"].get("rank") for target in prometheus.targets()
                 if target["labels"].get("run_id") == RUN_ID}
        assert ranks == {"0", "2"}
        up = {series["metric"]["rank"]: series["value"][1]
              for series in prometheus.query(f'up{{job="trainmon-trainers", run_id="{RUN_ID}"}}')}
        assert up == {"0": "1", "2": "0"}
