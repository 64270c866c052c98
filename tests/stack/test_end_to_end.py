"""End to end with real binaries on 127.0.0.1: a broken run reaches Slack and email, named, and resolves.

Prometheus + Pushgateway + Alertmanager + the metadata API run with the repository's configs, rendered with
local addresses, 1 s intervals and rule time compressed 60x (10m -> 10s); Alertmanager's config comes from
alertmanager/render.py with a Slack-compatible HTTP sink and an aiosmtpd SMTP sink. A real TrainingMonitor,
discovered through the API's http_sd, logs a finite loss, then NaN, then stops (alive, exporter up), then recovers;
finally the run is marked FAILED through the API, which posts the lifecycle notification to Alertmanager.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from repo_files import alertmanager_renderer
from sinks import SlackSink, SmtpSink, run_slack_sink, run_smtp_sink
from stack_servers import api_post, render_prometheus_config, render_scaled_rules
from support.api import run_api
from support.procs import run_alertmanager, run_prometheus, run_pushgateway, wait_until

pytestmark = pytest.mark.integration

RUN_ID = "e2e-run-7"
EXPERIMENT = "e2e-exp"
TIME_SCALE = 1 / 60  # rule windows and `for` durations: 10m -> 10s, 5m -> 5s


class Trainer:
    """Logs `loss` every 0.1 s from a thread while `loss` is not None; `stall()` stops logging, process alive."""

    def __init__(self, monitor: object):
        self.monitor = monitor
        self.loss: float | None = 1.0
        self.step = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(0.1):
            if self.loss is not None:
                self.step += 1
                self.monitor.log_metrics({"loss": self.loss}, step=self.step, samples=32)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _alertmanager_config(out_dir: Path, slack: SlackSink, smtp: SmtpSink) -> str:
    """The repo's Alertmanager config rendered with the sinks, notification timings shortened."""
    alertmanager_renderer().render(out_dir, env={
        "ENABLE_NOTIFICATIONS": "true", "SLACK_WEBHOOK_URL": slack.url, "EMAIL_NOTIFICATIONS": "oncall@example.org",
        "SMTP_SMARTHOST": smtp.smarthost, "SMTP_REQUIRE_TLS": "false", "GRAFANA_URL": "http://grafana.test:3000",
        "TRAINMON_API_URL": "http://api.test:5000"})
    config = yaml.safe_load((out_dir / "alertmanager.yml").read_text())
    config["route"].update(group_wait="1s", group_interval="1s", repeat_interval="1h")
    return yaml.safe_dump(config, sort_keys=False)


def _slack_has(slack: SlackSink, *needles: str) -> Callable[[], bool]:
    return lambda: any(all(needle in text for needle in needles) for text in slack.texts())


def _mail_has(smtp: SmtpSink, *needles: str) -> Callable[[], bool]:
    return lambda: any(all(needle in f"{mail.subject}\n{mail.text}" for needle in needles) for mail in smtp.mails)


def _wait(slack: SlackSink, check: Callable[[], bool], timeout: float, what: str) -> None:
    """wait_until, failing with every Slack message received so far."""
    try:
        wait_until(check, timeout=timeout, what=what)
    except TimeoutError as error:
        raise AssertionError(f"{error}; Slack got:\n" + "\n---\n".join(slack.texts())) from None


def test_broken_run_notifies_slack_and_email_then_resolves_and_reports_failure(tmp_path: Path) -> None:
    from trainmon.exporter import TrainingMonitor

    with contextlib.ExitStack() as stack:
        slack = stack.enter_context(run_slack_sink())
        smtp = stack.enter_context(run_smtp_sink())
        alertmanager_url = stack.enter_context(run_alertmanager(
            _alertmanager_config(tmp_path / "am-config", slack, smtp), workdir=tmp_path / "alertmanager"))
        (tmp_path / "api").mkdir()
        api_url = stack.enter_context(run_api(f"sqlite:///{tmp_path / 'api' / 'api.db'}", tmp_path / "api",
                                              ENABLE_NOTIFICATIONS="true", ALERTMANAGER_URL=alertmanager_url))
        pushgateway_url = stack.enter_context(run_pushgateway(tmp_path / "pushgateway"))
        rules = render_scaled_rules(tmp_path / "rules", TIME_SCALE)
        prometheus = stack.enter_context(run_prometheus(
            render_prometheus_config(api_url=api_url, pushgateway_url=pushgateway_url,
                                     alertmanager_url=alertmanager_url, rules_dir=rules),
            workdir=tmp_path / "prometheus"))

        monitor = TrainingMonitor(EXPERIMENT, "e2e", run_id=RUN_ID, port=0, gpu=False, system=False,
                                  pushgateway_url=pushgateway_url, push_interval=1.0, handle_signals=False)
        stack.callback(monitor.finish, "FAILED")
        api_post(api_url, "/api/runs", {"experiment": EXPERIMENT, "project": "e2e", "run_id": RUN_ID,
                                        "exporter_url": monitor.metrics_url})
        trainer = Trainer(monitor)
        stack.callback(trainer.stop)
        prometheus.wait_for(f'up{{job="trainmon-trainers", run_id="{RUN_ID}"}} == 1', timeout=30)
        prometheus.wait_for(f'trainmon_metric_value{{run_id="{RUN_ID}", key="loss"}}', timeout=15)
        assert not slack.messages, "a healthy run notified"

        # 1. The loss goes NaN: critical -> Slack and email, naming the run.
        trainer.loss = float("nan")
        wait_until(_slack_has(slack, "TrainmonLossNonFinite", RUN_ID, "firing", EXPERIMENT), timeout=30,
                   what="NaN alert on Slack")
        wait_until(_mail_has(smtp, "TrainmonLossNonFinite", RUN_ID), timeout=15, what="NaN alert by email")

        # 2. Then no step at all while the trainer is alive: stalled.
        trainer.loss = None
        wait_until(_slack_has(slack, "TrainmonTrainingStalled", RUN_ID, "firing"), timeout=45,
                   what="stall alert on Slack")

        # 3. Recovery: finite loss again -> both alerts resolved, on Slack and by email.
        trainer.loss = 0.5
        for alertname in ("TrainmonTrainingStalled", "TrainmonLossNonFinite"):
            resolved = f"*{alertname}* (critical) resolved"
            _wait(slack, _slack_has(slack, resolved, RUN_ID), 45, f"{alertname} resolved on Slack")
            _wait(slack, _mail_has(smtp, resolved, RUN_ID), 15, f"{alertname} resolved by email")

        # 4. The run fails: the API posts the lifecycle notification through Alertmanager.
        api_post(api_url, f"/api/runs/{RUN_ID}/status", {"status": "FAILED"})
        wait_until(_slack_has(slack, "TrainmonRunLifecycle", RUN_ID, "FAILED", EXPERIMENT), timeout=20,
                   what="lifecycle notification on Slack")
        wait_until(_mail_has(smtp, "TrainmonRunLifecycle", RUN_ID, "FAILED"), timeout=15,
                   what="lifecycle notification by email")

    firing = next(text for text in slack.texts() if "TrainmonLossNonFinite" in text)
    assert "Grafana: http://grafana.test:3000/d/trainmon-overview/" in firing
    assert f"API: http://api.test:5000/api/runs/{RUN_ID}" in firing
    assert "Value: " in firing
    assert all(mail.recipients == ["oncall@example.org"] for mail in smtp.mails)
