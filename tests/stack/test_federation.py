"""Several clusters, one global view (issue 11): prometheus/federation/ carries what the dashboards need, per cluster.

Two "clusters", each a simulated two-rank run (tests/stack/simulated_run.py: real exporters, metadata API,
Pushgateway) seen by its own real Prometheus running the repository's config with `external_labels.cluster` set
and prometheus/federation/remote-write.yml merged in. Two global Prometheus servers: one federates both clusters
with prometheus/federation/global-federate.yml, the other receives their remote_write
(global-remote-write.yml, `--web.enable-remote-write-receiver`). On each global server, for each cluster, every
variable and every Prometheus panel query of every dashboard returns data with `$cluster` set to that cluster
(the SQL panels read the metadata DB, which federation does not concern), and a cluster's selection never shows
the other cluster's run.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import pytest
import yaml
from dashboard_queries import has_value, query_gaps, substitute
from repo_files import PROMETHEUS_DIR, dashboards, load_yaml, panels, rule_groups
from simulated_run import SimulatedRun, simulated_run
from support.procs import Prometheus, run_prometheus

pytestmark = pytest.mark.integration

FEDERATION_DIR = PROMETHEUS_DIR / "federation"
CLUSTERS = ("cluster-a", "cluster-b")
PROMQL_WORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset",
                "bool", "inf", "nan"}


def federate_selector() -> str:
    [selector] = load_yaml(FEDERATION_DIR / "global-federate.yml")["scrape_configs"][0]["params"]["match[]"]
    match = re.fullmatch(r'\{__name__=~"(.+)"\}', selector)
    assert match, selector
    return match.group(1)


def remote_write_regex() -> str:
    [keep] = load_yaml(FEDERATION_DIR / "remote-write.yml")["remote_write"][0]["write_relabel_configs"]
    assert keep["action"] == "keep" and keep["source_labels"] == ["__name__"]
    return keep["regex"]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (label matchers, grouping labels, strings and ranges out)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+\w+", " ", text)
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        word = match.group(0)
        follows = text[match.end():].lstrip()[:1]
        if word.lower() not in PROMQL_WORDS and follows != "(" and not word.startswith("__"):
            names.add(word)
    return names


def used_metric_names() -> set[str]:
    """Every metric a dashboard query (variables included) or a rule reads."""
    exprs = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    for board in dashboards().values():
        exprs += [variable["query"].removeprefix("label_values(").rsplit(",", 1)[0]
                  for variable in board["templating"]["list"]]
        exprs += [target["expr"] for panel in panels(board) for target in panel.get("targets", [])
                  if target.get("expr")]
    return set().union(*(metric_names(expr) for expr in exprs))


def test_federation_and_remote_write_select_the_same_series() -> None:
    assert federate_selector() == remote_write_regex()


def test_the_selection_covers_every_series_the_dashboards_and_rules_read() -> None:
    names = used_metric_names()
    assert {"trainmon_run_info", "ALERTS", "up", "push_time_seconds", "run:trainmon_steps:rate1m"} <= names
    pattern = re.compile(federate_selector())
    assert sorted(name for name in names if not pattern.fullmatch(name)) == []


def test_metric_names() -> None:
    assert metric_names('max by (cluster, run_id) (trainmon_step{cluster=~"$cluster"})') == {"trainmon_step"}
    assert metric_names("a / on (x) group_left (y) b offset 10m and rate(c[5m]) > 2") == {"a", "b", "c"}


def test_every_cluster_has_a_cluster_label_in_prometheus_yml() -> None:
    assert "cluster" in load_yaml(PROMETHEUS_DIR / "prometheus.yml")["global"]["external_labels"]


# --- the real servers ---


@dataclass
class Stack:
    clusters: dict[str, SimulatedRun]
    globals: dict[str, Prometheus]  # "federate" / "remote_write" -> the global server


def _cluster_config(name: str, receiver_url: str):
    def adapt(config_text: str) -> str:
        config = yaml.safe_load(config_text)
        config["global"]["external_labels"]["cluster"] = name
        [write] = load_yaml(FEDERATION_DIR / "remote-write.yml")["remote_write"]
        write["url"] = f"{receiver_url}/api/v1/write"
        write["queue_config"]["batch_send_deadline"] = "1s"
        config["remote_write"] = [write]
        return yaml.safe_dump(config, sort_keys=False)

    return adapt


def _fast(config: dict) -> dict:
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["scrape_configs"] = [job for job in config["scrape_configs"] if job["job_name"] != "prometheus"]
    return config


def _federate_config(cluster_urls: dict[str, str]) -> str:
    config = _fast(load_yaml(FEDERATION_DIR / "global-federate.yml"))
    [job] = config["scrape_configs"]
    job.update(scrape_interval="2s", scrape_timeout="2s")  # a whole cluster's series per scrape, on 2 cores
    job["static_configs"] = [{"targets": [urlsplit(url).netloc], "labels": {"cluster": name}}
                             for name, url in cluster_urls.items()]
    return yaml.safe_dump(config, sort_keys=False)


def _receiver_config() -> str:
    config = _fast(load_yaml(FEDERATION_DIR / "global-remote-write.yml"))
    config["scrape_configs"] = config["scrape_configs"] or []
    return yaml.safe_dump(config, sort_keys=False)


@pytest.fixture(scope="module")
def stack(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("federation")
    with contextlib.ExitStack() as servers:
        receiver = servers.enter_context(run_prometheus(_receiver_config(), workdir=base / "global-rw",
                                                        extra_args=["--web.enable-remote-write-receiver"]))
        clusters = {name: servers.enter_context(simulated_run(postgres_url, base / name,
                                                              adapt_config=_cluster_config(name, receiver.url)))
                    for name in CLUSTERS}
        federate = servers.enter_context(run_prometheus(
            _federate_config({name: run.prometheus.url for name, run in clusters.items()}),
            workdir=base / "global-federate"))
        globals_ = {"federate": federate, "remote_write": receiver}
        # Every cluster's recorded and alert series have arrived, several samples of each (federation starts
        # with the global server: a range query needs more than its first scrape).
        for server in globals_.values():
            for name, run in clusters.items():
                for series in (f'rank:trainmon_step_duration_seconds:mean1m{{cluster="{name}", run_id="{run.run_id}"}}',
                               f'ALERTS{{cluster="{name}", run_id="{run.run_id}"}}',
                               f'run:trainmon_step_duration_seconds:spread_ratio5m{{cluster="{name}"}}'):
                    server.wait_for(f"count_over_time({series}[1m]) >= 5", timeout=60)
        yield Stack(clusters, globals_)


def _variables(run: SimulatedRun, cluster: str) -> dict[str, list[str] | None]:
    return {**run.variables, "cluster": [cluster]}


@pytest.mark.parametrize("path", ["federate", "remote_write"])
@pytest.mark.parametrize("name", sorted(dashboards()))
def test_every_dashboard_query_has_data_per_cluster_on_the_global_prometheus(stack: Stack, path: str,
                                                                             name: str) -> None:
    server = stack.globals[path]
    missing = []
    for cluster, run in stack.clusters.items():
        gaps = query_gaps(dashboards()[name], server, _variables(run, cluster), run.start)
        missing += [f"[{cluster}] {gap}" for gap in gaps]
    assert not missing, f"{name} on the {path} global Prometheus:\n" + "\n".join(missing)


@pytest.mark.parametrize("path", ["federate", "remote_write"])
def test_series_carry_their_cluster_and_one_cluster_never_shows_the_other(stack: Stack, path: str) -> None:
    server = stack.globals[path]
    runs = {series["metric"]["run_id"]: series["metric"]["cluster"]
            for series in server.query("count by (cluster, run_id) (trainmon_run_info)")}
    assert runs == {run.run_id: cluster for cluster, run in stack.clusters.items()}
    a, b = CLUSTERS
    crossed = {**_variables(stack.clusters[b], a)}  # cluster a selected, cluster b's run
    query = substitute('trainmon_metric_value{cluster=~"$cluster", run_id=~"$run_id", key="$key"}', crossed, set(),
                       sql=False)
    assert not has_value(server.query(query))
    assert has_value(server.query(query.replace(f'"{a}"', f'"{b}"')))


def test_the_debian_prometheus_has_the_remote_write_receiver(stack: Stack) -> None:
    """The receiver flag exists in this Prometheus (2.33+): remote-written samples arrived."""
    assert stack.globals["remote_write"].query('count(up{job="trainmon-trainers"})')
