"""Run lifecycle notifications: the metadata API posts TrainmonRunLifecycle alerts to a real Alertmanager."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient
from repo_files import alertmanager_renderer
from sqlalchemy import select
from support.procs import free_port, run_alertmanager, wait_until
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.models import Run, RunStatus
from trainmon.metadata_api.services import lifecycle, notifications
from trainmon.metadata_api.settings import Settings


@pytest.fixture
def alertmanager_url(tmp_path: Path) -> Iterator[str]:
    alertmanager_renderer().render(tmp_path / "am-config", env={"ENABLE_NOTIFICATIONS": "false"})
    with run_alertmanager((tmp_path / "am-config" / "alertmanager.yml").read_text(), workdir=tmp_path / "am") as url:
        yield url


def _client(tmp_path: Path, **settings: object) -> TestClient:
    return TestClient(create_app(Settings(_env_file=None, database_url=f"sqlite:///{tmp_path / 'api.db'}",
                                          artifact_root=tmp_path, crash_check_interval_seconds=3600,
                                          retention_interval_seconds=3600, allowed_hosts="testserver", **settings)))


def _lifecycle_alerts(url: str) -> list[dict]:
    answer = requests.get(f"{url}/api/v2/alerts", params={"filter": 'alertname="TrainmonRunLifecycle"'}, timeout=5)
    return answer.json()


def test_a_failed_run_reaches_alertmanager_named(tmp_path: Path, alertmanager_url: str) -> None:
    with _client(tmp_path, enable_notifications=True, alertmanager_url=alertmanager_url) as api:
        api.post("/api/runs", json={"experiment": "bert", "project": "nlp", "run_id": "run-42", "host": "node7"})
        assert api.post("/api/runs/run-42/status", json={"status": "FAILED"}).status_code == 200
        wait_until(lambda: _lifecycle_alerts(alertmanager_url), what="lifecycle alert in Alertmanager")
    [alert] = _lifecycle_alerts(alertmanager_url)
    assert alert["labels"] == {"alertname": "TrainmonRunLifecycle", "run_id": "run-42", "experiment": "bert",
                               "project": "nlp", "status": "FAILED", "severity": "critical", "team": "training"}
    assert "node7" in alert["annotations"]["description"]
    assert alert["generatorURL"].endswith("/api/runs/run-42")


def test_notifications_off_posts_nothing(tmp_path: Path) -> None:
    with _client(tmp_path, enable_notifications=False, alertmanager_url="http://127.0.0.1:9") as api:
        assert notifications._notifier is None
        api.post("/api/runs", json={"experiment": "bert", "run_id": "quiet"})
        assert api.post("/api/runs/quiet/status", json={"status": "FAILED"}).status_code == 200


def test_a_dead_alertmanager_does_not_fail_the_status_change(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with _client(tmp_path, enable_notifications=True, alertmanager_url=dead) as api:
        api.post("/api/runs", json={"experiment": "bert", "run_id": "r"})
        assert api.post("/api/runs/r/status", json={"status": "CRASHED"}).json()["status"] == "CRASHED"
    notifier = notifications.AlertmanagerNotifier(dead, "http://grafana", "http://api", timeout=1)
    event = notifications.RunEvent("r", "bert", "default", "CRASHED")
    with pytest.raises(requests.RequestException):
        notifier.post([event])
    notifier.notify([event]).join(timeout=10)  # logged, not raised


def test_completed_is_info_and_running_is_not_notified() -> None:
    alert = notifications.lifecycle_alert(notifications.RunEvent("r", "e", "p", "COMPLETED"), "http://g", "http://a")
    assert alert["labels"]["severity"] == "info"
    assert "var-run_id=r" in alert["annotations"]["grafana_url"]
    notifier = notifications.AlertmanagerNotifier("http://127.0.0.1:9", "http://g", "http://a")
    with pytest.raises(KeyError):
        notifications.lifecycle_alert(notifications.RunEvent("r", "e", "p", "RUNNING"), "http://g", "http://a")
    notifier.notify([notifications.RunEvent("r", "e", "p", "RUNNING")]).join(timeout=5)


def test_only_committed_status_changes_are_sent(tmp_path: Path, alertmanager_url: str) -> None:
    with _client(tmp_path, enable_notifications=True, alertmanager_url=alertmanager_url) as api:
        api.post("/api/runs", json={"experiment": "bert", "project": "nlp", "run_id": "kept"})
        api.post("/api/runs", json={"experiment": "bert", "project": "nlp", "run_id": "undone"})
        sessions = api.app.state.write_sessions
        with sessions() as session:
            lifecycle.change_status(session.scalars(select(Run).where(Run.id == "undone")).one(), RunStatus.FAILED)
            session.rollback()
        with sessions() as session:
            lifecycle.change_status(session.scalars(select(Run).where(Run.id == "kept")).one(), RunStatus.CRASHED)
            session.commit()
        wait_until(lambda: _lifecycle_alerts(alertmanager_url), what="lifecycle alert in Alertmanager")
    assert [alert["labels"]["run_id"] for alert in _lifecycle_alerts(alertmanager_url)] == ["kept"]
