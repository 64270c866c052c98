"""Run lifecycle notifications (COMPLETED / FAILED / CRASHED) through Alertmanager: one path for everything.

The lifecycle service calls `status_changed(run, session)` for every run whose status changed (crash sweeps
included); the notifications go out when that session commits (a rolled-back change sends nothing).
When ENABLE_NOTIFICATIONS is true and ALERTMANAGER_URL is set (`configure(settings)`, done by `create_app`), each
becomes an alert `TrainmonRunLifecycle` posted to Alertmanager's `/api/v2/alerts`; alertmanager/alertmanager.yml
routes it to the `lifecycle` receiver (Slack and email), with the same templates as the Prometheus alerts.
Posting happens on a background thread with a short timeout: a slow or dead Alertmanager never slows an API
request; a failure is logged, without the credentials ALERTMANAGER_URL may carry (`redact`).

The alert holds for `HOLD` and then ends on its own (the lifecycle receiver does not send "resolved").
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from urllib.parse import quote

import requests
from sqlalchemy import event
from sqlalchemy.orm import Session, object_session

from ..models import Run
from ..redact import redact, redact_url, register_url_secrets
from ..settings import Settings

log = logging.getLogger("trainmon.metadata_api.notifications")

ALERTNAME = "TrainmonRunLifecycle"
SEVERITY = {"COMPLETED": "info", "FAILED": "critical", "CRASHED": "critical"}
HOLD = timedelta(minutes=10)
POST_TIMEOUT_SECONDS = 3.0
PENDING_KEY = "trainmon.pending_lifecycle_notifications"


@dataclass(frozen=True)
class RunEvent:
    """A run reaching a status worth telling people about."""

    run_id: str
    experiment: str
    project: str
    status: str
    host: str | None = None

    @classmethod
    def of(cls, run: Run) -> RunEvent:
        experiment = run.experiment
        return cls(run.id, experiment.name, experiment.project.name, run.status, run.host)


def lifecycle_alert(event: RunEvent, grafana_url: str, api_url: str, now: datetime | None = None) -> dict:
    """The Alertmanager v2 alert for `event` (labels route it; annotations feed the message templates)."""
    now = now or datetime.now(timezone.utc)
    where = f" on {event.host}" if event.host else ""
    run_link = f"{api_url.rstrip('/')}/api/runs/{quote(event.run_id, safe='')}"
    return {
        "labels": {"alertname": ALERTNAME, "run_id": event.run_id, "experiment": event.experiment,
                   "project": event.project, "status": event.status, "severity": SEVERITY[event.status],
                   "team": "training"},
        "annotations": {
            "summary": f"Run {event.run_id} ({event.experiment}) {event.status}",
            "description": f"Run {event.run_id} of experiment {event.experiment} (project {event.project}){where} "
                           f"is now {event.status}. Details: {run_link}",
            "value": event.status,
            "runbook_url": "docs/runbook.md#trainmonrunlifecycle",
            "grafana_url": f"{grafana_url.rstrip('/')}/d/trainmon-overview/training-overview"
                           f"?var-experiment={quote(event.experiment)}&var-run_id={quote(event.run_id)}",
        },
        "startsAt": now.isoformat(),
        "endsAt": (now + HOLD).isoformat(),
        "generatorURL": run_link,
    }


class AlertmanagerNotifier:
    """Posts lifecycle alerts to one Alertmanager."""

    def __init__(self, alertmanager_url: str, grafana_url: str, api_url: str,
                 timeout: float = POST_TIMEOUT_SECONDS):
        self.url = alertmanager_url.rstrip("/") + "/api/v2/alerts"
        register_url_secrets(self.url)
        self.display_url = redact_url(self.url)  # what logs may show: no user:password@
        self.grafana_url = grafana_url
        self.api_url = api_url
        self.timeout = timeout

    def post(self, events: Iterable[RunEvent]) -> None:
        """Post now (raises on failure)."""
        alerts = [lifecycle_alert(event, self.grafana_url, self.api_url) for event in events]
        if alerts:
            requests.post(self.url, json=alerts, timeout=self.timeout).raise_for_status()

    def notify(self, events: Iterable[RunEvent]) -> threading.Thread:
        """Post on a background thread; failures are logged, never raised."""
        wanted = [event for event in events if event.status in SEVERITY]

        def send() -> None:
            try:
                self.post(wanted)
            except requests.RequestException as error:
                log.warning("lifecycle notification to %s failed: %s", self.display_url, redact(str(error)))

        thread = threading.Thread(target=send, name="trainmon-notify", daemon=True)
        thread.start()
        return thread


_notifier: AlertmanagerNotifier | None = None


def configure(settings: Settings, env: Mapping[str, str] | None = None) -> AlertmanagerNotifier | None:
    """Set up (or switch off) notifications for this process from the settings; links from GRAFANA_URL and
    TRAINMON_API_URL in the environment."""
    global _notifier
    env = os.environ if env is None else env
    if settings.enable_notifications and settings.alertmanager_url:
        _notifier = AlertmanagerNotifier(settings.alertmanager_url,
                                         env.get("GRAFANA_URL", "http://localhost:3000"),
                                         env.get("TRAINMON_API_URL", f"http://{settings.host}:{settings.port}"))
    else:
        if settings.enable_notifications:
            log.warning("ENABLE_NOTIFICATIONS is on but ALERTMANAGER_URL is empty: no lifecycle notifications")
        _notifier = None
    return _notifier


def status_changed(run: Run, session: Session | None = None) -> None:
    """Called by the lifecycle service after `run.status` changed; sent once `session` (by default the run's own)
    commits."""
    if _notifier is not None and run.status in SEVERITY:
        _send_after_commit(session if session is not None else object_session(run), [RunEvent.of(run)])


def _send_after_commit(session: Session | None, events: list[RunEvent]) -> None:
    """Queue `events` on the session: a commit sends them, a rollback drops them (no session: send now)."""
    if session is None:
        if _notifier is not None:
            _notifier.notify(events)
        return
    session.info.setdefault(PENDING_KEY, []).extend(events)


@event.listens_for(Session, "after_commit")
def _flush_pending(session: Session) -> None:
    events = session.info.pop(PENDING_KEY, None)
    if events and _notifier is not None:
        _notifier.notify(events)


@event.listens_for(Session, "after_rollback")
def _drop_pending(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)
