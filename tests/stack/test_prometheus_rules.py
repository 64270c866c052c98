"""promtool over the repository's Prometheus config, rules and rule unit tests, plus the rules' conventions."""

from __future__ import annotations

import subprocess

import pytest
from repo_files import PROMETHEUS_DIR, RULE_TESTS_DIR, RULES_DIR, alerting_rules, load_yaml, rule_groups
from support.docs import docs_page, headings
from support.procs import require_binary

# The alerts issue 5 asks for; each must exist, and nothing else may appear unannounced.
EXPECTED_ALERTS = {
    "TrainmonTrainingStalled", "TrainmonLossNonFinite", "TrainmonLossDiverging", "TrainmonThroughputDropped",
    "TrainmonGpuIdle", "TrainmonGpuMemoryNearFull", "TrainmonGpuTooHot", "TrainmonGpuThrottled",
    "TrainmonGpuEccUncorrectable", "TrainmonStragglerRank", "TrainmonExporterDown", "TrainmonExporterAbsent",
    "TrainmonPushgatewayGroupStale", "TrainmonRunCrashed",
}


def promtool(*args: str) -> subprocess.CompletedProcess:
    binary = require_binary("promtool")
    return subprocess.run([binary, *args], capture_output=True, text=True, cwd=PROMETHEUS_DIR, timeout=120)


def test_promtool_check_config_accepts_prometheus_yml() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_check_rules_accepts_every_rule_file() -> None:
    files = sorted(str(path) for path in RULES_DIR.glob("*.yml"))
    assert files
    result = promtool("check", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    files = sorted(str(path) for path in RULE_TESTS_DIR.glob("*_test.yml"))
    result = promtool("test", "rules", *files)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_group_has_its_own_unit_test_file() -> None:
    for group in rule_groups():
        test_file = RULE_TESTS_DIR / group["file"].replace(".yml", "_test.yml")
        assert test_file.exists(), f"group {group['name']} has no promtool test file {test_file.name}"
        assert f"../rules/{group['file']}" in load_yaml(test_file)["rule_files"]


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    fired: set[str] = set()
    quiet: set[str] = set()
    for path in RULE_TESTS_DIR.glob("*_test.yml"):
        for case in load_yaml(path)["tests"]:
            for check in case.get("alert_rule_test", []):
                (fired if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alerting_rules()}
    assert names - fired == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"


def test_the_issue_alerts_all_exist() -> None:
    assert {rule["alert"] for rule in alerting_rules()} == EXPECTED_ALERTS


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: rule["alert"])
def test_alert_has_for_severity_team_and_run_naming_annotations(rule: dict) -> None:
    assert "for" in rule
    assert rule["labels"]["severity"] in {"critical", "warning"}
    assert rule["labels"]["team"] in {"training", "platform"}
    annotations = rule["annotations"]
    assert annotations["runbook_url"] == f"docs/runbook.md#{rule['alert'].lower()}"
    if "run_id" in annotations["summary"] or rule["alert"] not in {"TrainmonExporterAbsent", "TrainmonRunCrashed"}:
        for text in (annotations["summary"], annotations["description"]):
            assert "{{ $labels.run_id }}" in text, f"{rule['alert']} does not name the run"
        assert "{{ $labels.experiment }}" in annotations["description"]


def test_prometheus_yml_discovers_trainers_and_reads_pushgateway_with_honor_labels() -> None:
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    trainers = jobs["trainmon-trainers"]
    assert trainers["honor_labels"] is True
    assert trainers["http_sd_configs"][0]["url"].endswith("/api/sd")
    assert jobs["pushgateway"]["honor_labels"] is True
    assert "trainmon-api" in jobs
    assert config["alerting"]["alertmanagers"]
    assert config["rule_files"] == ["rules/*.yml"]


def test_the_runbook_has_a_section_for_every_alert_and_the_lifecycle_notification() -> None:
    sections = {title for level, title in headings(docs_page("runbook")) if level == 2}
    assert EXPECTED_ALERTS | {"TrainmonRunLifecycle"} <= sections
