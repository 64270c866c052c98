"""Every dashboard query returns data for a real run.

A simulated two-rank run (tests/stack/simulated_run.py: real `TrainingMonitor`s, GPU readings replayed from an
H200) is registered with the real metadata API on a real Postgres; rank 0 is discovered through the API's http_sd
and scraped, rank 1 pushes to a real Pushgateway; a real Prometheus loads the repository's prometheus.yml and
rules (addresses and intervals overridden). Then every variable query and every panel query of every dashboard,
with the variables set to that run, runs against Prometheus or Postgres; a query without data fails. The same
queries run against global Prometheus servers, per cluster, in test_federation.py.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from dashboard_queries import has_value, panel_titled, query_gaps, run_target, substitute
from repo_files import dashboards
from simulated_run import WORLD_SIZE, SimulatedRun, simulated_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatedRun]:
    with simulated_run(postgres_url, tmp_path_factory.mktemp("dashboards-data")) as simulated:
        yield simulated


@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_variable_and_panel_query_returns_data(run: SimulatedRun, name: str) -> None:
    missing = query_gaps(dashboards()[name], run.prometheus, run.variables, run.start, run.database_url)
    assert not missing, f"{name}: queries without data for run {run.run_id}:\n" + "\n".join(missing)


def test_world_size_is_the_number_of_ranks_not_the_info_value(run: SimulatedRun) -> None:
    """The "World size" stat shows the ranks' WORLD_SIZE (2 here) as a value (trainmon_world_size), not
    trainmon_run_info's value 1 with the size in a legend; on Prometheus alone, so federation carries it."""
    board = dashboards()["distributed.json"]
    [target] = panel_titled(board, "World size")["targets"]
    query, result = run_target({**target, "instant": True}, board, run.prometheus, run.variables, run.start)
    assert [float(series["value"][1]) for series in result] == [WORLD_SIZE], f"{query} -> {result}"


def test_substitution_is_not_vacuous(run: SimulatedRun) -> None:
    """A run that does not exist gets no data: the check above can fail."""
    query = substitute('trainmon_metric_value{run_id=~"$run_id", key="$key"}', {"run_id": ["nope"], "key": ["loss"]},
                       set(), sql=False)
    assert not has_value(run.prometheus.query_range(query, run.start, time.time(), step=1))


def test_the_by_step_panel_draws_one_series_per_run_and_rank(run: SimulatedRun) -> None:
    """Each rank's history is its own series in the metadata DB: the compare board's by-step panel partitions its
    rows by run and rank, and `$rank` narrows them."""
    board = dashboards()["compare-runs.json"]
    [target] = panel_titled(board, "$key by step")["targets"]
    _, rows = run_target(target, board, run.prometheus, run.variables, run.start, run.database_url)
    assert {series for _step, _value, series in rows} == {f"{run.run_id} rank {rank}" for rank in range(WORLD_SIZE)}
    _, rows = run_target(target, board, run.prometheus, {**run.variables, "rank": ["1"]}, run.start, run.database_url)
    assert {series for _step, _value, series in rows} == {f"{run.run_id} rank 1"}
