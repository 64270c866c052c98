"""Grafana dashboards as code: generated JSON is current, uids are stable, datasources match the provisioning."""

from __future__ import annotations

import subprocess
import sys

import pytest
from repo_files import GRAFANA_DIR, dashboard_generator, dashboards, load_yaml, panels

EXPECTED = {
    "training-overview.json": "trainmon-overview",
    "compare-runs.json": "trainmon-compare",
    "gpu-and-system.json": "trainmon-gpu-system",
    "distributed.json": "trainmon-distributed",
    "alerts.json": "trainmon-alerts",
}


def provisioned_datasource_uids() -> set[str]:
    config = load_yaml(GRAFANA_DIR / "provisioning" / "datasources" / "trainmon.yml")
    return {source["uid"] for source in config["datasources"]}


def test_committed_json_matches_the_grafanalib_sources() -> None:
    generator = dashboard_generator()
    assert generator.stale() == [], "run `make dashboards` and commit the JSON"


def test_generate_check_mode_reports_drift(tmp_path) -> None:
    generator = dashboard_generator()
    for source in generator.dashboard_sources():
        (tmp_path / source.name).write_text(source.read_text())
    (tmp_path / "trainmon_panels.py").write_text((GRAFANA_DIR / "dashboards" / "trainmon_panels.py").read_text())
    assert len(generator.stale(tmp_path)) == len(EXPECTED), "missing JSON counts as stale"
    result = subprocess.run([sys.executable, str(GRAFANA_DIR / "dashboards" / "generate.py"), "--check"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_every_dashboard_exists_with_its_stable_uid() -> None:
    assert {name: board["uid"] for name, board in dashboards().items()} == EXPECTED


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_query_uses_a_provisioned_datasource(name: str) -> None:
    board = dashboards()[name]
    uids = provisioned_datasource_uids()
    for variable in board["templating"]["list"]:
        assert variable["datasource"]["uid"] in uids
    queried = [panel for panel in panels(board) if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            assert target["datasource"]["uid"] in uids, panel["title"]
            assert target.get("expr") or target.get("rawSql"), panel["title"]


def test_provisioning_loads_the_dashboards_folder() -> None:
    config = load_yaml(GRAFANA_DIR / "provisioning" / "dashboards" / "trainmon.yml")
    assert config["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards/trainmon"
