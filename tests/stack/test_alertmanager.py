"""alertmanager/: rendering from the environment, amtool checks and route tests, inhibition in a real Alertmanager."""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import requests
from repo_files import ALERTMANAGER_DIR, alertmanager_renderer, load_yaml
from support.procs import require_binary, run_alertmanager, wait_until

render = alertmanager_renderer()
ROUTE_CASES = load_yaml(ALERTMANAGER_DIR / "tests" / "routes.yml")
NOTIFYING_ENV = {
    "ENABLE_NOTIFICATIONS": "true",
    "SLACK_WEBHOOK_URL": "https://hooks.slack.example/services/T0/B0/secret",
    "EMAIL_NOTIFICATIONS": "ml-oncall@example.org, lead@example.org",
    "SMTP_SMARTHOST": "smtp.example.org:587",
    "SMTP_AUTH_USERNAME": "trainmon",
    "SMTP_AUTH_PASSWORD": "hunter2",
    "GRAFANA_URL": "https://grafana.example.org",
}


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_binary("amtool"), *args], capture_output=True, text=True, timeout=60)


@pytest.fixture
def rendered(tmp_path: Path) -> Path:
    render.render(tmp_path, env=NOTIFYING_ENV)
    return tmp_path / "alertmanager.yml"


def test_rendered_config_passes_amtool_check_config(rendered: Path) -> None:
    result = amtool("check-config", str(rendered))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 templates" in result.stdout


def test_secrets_go_to_files_outside_the_repo_never_into_the_config(rendered: Path) -> None:
    text = rendered.read_text()
    assert "hunter2" not in text and "T0/B0/secret" not in text
    slack_file = Path(load_yaml(rendered)["receivers"][0]["slack_configs"][0]["api_url_file"])
    assert slack_file.read_text() == NOTIFYING_ENV["SLACK_WEBHOOK_URL"]
    assert slack_file.stat().st_mode & 0o077 == 0
    assert slack_file.parent.parent == rendered.parent
    template = (rendered.parent / "templates" / "trainmon.tmpl").read_text()
    assert '{{ define "trainmon.grafana.base" }}https://grafana.example.org{{ end }}' in template
    assert "${" not in template


def test_email_goes_through_the_smarthost_from_the_environment(rendered: Path) -> None:
    config = load_yaml(rendered)
    assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"
    assert config["global"]["smtp_require_tls"] is True
    email = next(r for r in config["receivers"] if r["name"] == "training-critical")["email_configs"][0]
    assert email["to"] == NOTIFYING_ENV["EMAIL_NOTIFICATIONS"]
    assert Path(email["auth_password_file"]).read_text() == "hunter2"
    assert email["send_resolved"] is True


def test_notifications_disabled_leaves_every_receiver_unwired(tmp_path: Path) -> None:
    config = render.render(tmp_path, env={**NOTIFYING_ENV, "ENABLE_NOTIFICATIONS": "false"})
    assert config["receivers"], "the routes and receivers stay"
    for receiver in config["receivers"]:
        assert set(receiver) == {"name"}, receiver
    assert amtool("check-config", str(tmp_path / "alertmanager.yml")).returncode == 0


def test_enabled_without_a_webhook_wires_email_only(tmp_path: Path) -> None:
    env = {key: value for key, value in NOTIFYING_ENV.items() if key != "SLACK_WEBHOOK_URL"}
    config = render.render(tmp_path, env=env)
    assert all("slack_configs" not in receiver for receiver in config["receivers"])
    assert any("email_configs" in receiver for receiver in config["receivers"])


def test_email_recipients_without_a_smarthost_is_a_clear_error(tmp_path: Path) -> None:
    env = {key: value for key, value in NOTIFYING_ENV.items() if key != "SMTP_SMARTHOST"}
    with pytest.raises(render.RenderError, match="SMTP_SMARTHOST"):
        render.render(tmp_path, env=env)


def test_values_cannot_inject_yaml(tmp_path: Path) -> None:
    config = render.render(tmp_path, env={**NOTIFYING_ENV, "SLACK_CHANNEL_TRAINING": "#x'\nglobal: {}"})
    assert config["receivers"][0]["slack_configs"][0]["channel"] == "#x'\nglobal: {}"
    assert config["global"]["smtp_smarthost"] == "smtp.example.org:587"


@pytest.mark.parametrize("case", ROUTE_CASES, ids=lambda case: "-".join(case["labels"].values()))
def test_amtool_routes(rendered: Path, case: dict) -> None:
    labels = [f"{key}={value}" for key, value in case["labels"].items()]
    result = amtool("config", "routes", "test", f"--config.file={rendered}",
                    f"--verify.receivers={','.join(case['receivers'])}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr


def _post_alerts(url: str, *label_sets: dict[str, str]) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    alerts = [{"labels": labels, "annotations": {"summary": "test"}, "startsAt": now.isoformat(),
               "endsAt": (now + dt.timedelta(minutes=5)).isoformat()} for labels in label_sets]
    requests.post(f"{url}/api/v2/alerts", json=alerts, timeout=5).raise_for_status()


def test_exporter_down_inhibits_stalled_and_gpu_idle_of_the_same_run_only(rendered: Path) -> None:
    run = {"experiment": "exp", "run_id": "r1", "team": "training"}
    other = {**run, "run_id": "r2"}
    with run_alertmanager(rendered.read_text(), workdir=rendered.parent / "am") as url:
        _post_alerts(url, {"alertname": "TrainmonExporterDown", "severity": "critical", **run},
                     {"alertname": "TrainmonTrainingStalled", "severity": "critical", **run},
                     {"alertname": "TrainmonGpuIdle", "severity": "warning", **run},
                     {"alertname": "TrainmonTrainingStalled", "severity": "critical", **other})

        def states() -> dict[tuple[str, str], str]:
            answer = requests.get(f"{url}/api/v2/alerts", timeout=5).json()
            return {(a["labels"]["alertname"], a["labels"]["run_id"]): a["status"]["state"] for a in answer}

        wait_until(lambda: len(states()) == 4 and "unprocessed" not in states().values(), what="alerts processed")
        assert states() == {
            ("TrainmonExporterDown", "r1"): "active",
            ("TrainmonTrainingStalled", "r1"): "suppressed",
            ("TrainmonGpuIdle", "r1"): "suppressed",
            ("TrainmonTrainingStalled", "r2"): "active",
        }
