"""TrainingMonitor end to end over real HTTP: serving, ports, settings, lifecycle, signals, health, seams."""

from __future__ import annotations

import logging
import math
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import MappingProxyType

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.fixtures import H200_PROBE as H200_FIXTURE
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.config import DEFAULT_BASE_PORT, resolve_config

QUIET = {"gpu": False, "system": False, "handle_signals": False}


def scrape(monitor: TrainingMonitor) -> dict[tuple, float]:
    """{(sample name, sorted non-run labels...): value} from the monitor's real /metrics."""
    text = requests.get(monitor.metrics_url, timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["run_id"] == monitor.run_id, sample
            extra = sorted((k, v) for k, v in sample.labels.items() if k not in ("experiment", "run_id", "rank"))
            out[(sample.name, *extra)] = sample.value
    return out


@pytest.fixture
def monitor() -> TrainingMonitor:
    with TrainingMonitor("exp", "proj", port=0, **QUIET) as running:
        yield running


def test_serves_logged_metrics_with_run_labels(monitor: TrainingMonitor) -> None:
    for step in range(100):
        monitor.log_metrics({"loss": 1.0 / (step + 1), "val/acc": 0.5, "bad": "x"}, step)
    got = scrape(monitor)
    assert got[("trainmon_metric_value", ("key", "loss"))] == 0.01
    assert got[("trainmon_metric_value", ("key", "val_acc"))] == 0.5
    assert got[("trainmon_metric_count", ("key", "loss"))] == 100
    assert got[("trainmon_step",)] == 99
    assert got[("trainmon_steps_total",)] == 100
    assert got[("trainmon_metric_rejected_total", ("reason", "non_numeric"))] == 100
    info = [key for key in got if key[0] == "trainmon_run_info"][0]
    labels = dict(info[1:])
    assert labels["project"] == "proj"
    assert labels["host"] == socket.gethostname()
    assert labels["port"] == str(monitor.port)
    assert labels["world_size"] == "1" and labels["local_rank"] == "0"
    assert labels["version"]
    assert monitor.metrics_url == f"http://127.0.0.1:{monitor.port}/metrics"


def test_health_reports_training_timed_at_scrape(monitor: TrainingMonitor) -> None:
    monitor.log_metrics({"loss": 1.0})
    got = scrape(monitor)
    assert got[("trainmon_exporter_collector_success", ("collector", "training"))] == 1
    assert got[("trainmon_exporter_collector_duration_seconds", ("collector", "training"))] > 0
    assert got[("trainmon_exporter_dropped_points_total", ("reason", "buffer_full"))] == 0
    assert got[("trainmon_exporter_pushes_total", ("result", "failure"))] == 0
    assert ("trainmon_exporter_buffered_points",) in got


def test_every_dropped_points_reason_is_exported_at_zero_from_the_first_scrape() -> None:
    """increase()/alerts need the series before the first drop; every reason the exporter code uses is listed."""
    from trainmon.exporter.health import DROP_REASONS

    repo = Path(__file__).resolve().parents[2]
    source = "\n".join(path.read_text() for folder in ("exporter", "client") for path in (repo / folder).rglob("*.py"))
    used = set(re.findall(r'(?:_drop|count_dropped)\(\s*"(\w+)"', source))
    used |= set(re.findall(r'^\s*reason = "(\w+)"', source, re.MULTILINE))
    assert {"buffer_full", "sink_error", "spool_full", "spool_error", "rejected"} <= used <= set(DROP_REASONS)
    with TrainingMonitor("exp", port=0, **QUIET) as fresh:
        got = scrape(fresh)
        assert {reason: got[("trainmon_exporter_dropped_points_total", ("reason", reason))]
                for reason in DROP_REASONS} == dict.fromkeys(DROP_REASONS, 0)
        fresh.count_dropped("spool_full", 3)
        assert scrape(fresh)[("trainmon_exporter_dropped_points_total", ("reason", "spool_full"))] == 3


def test_sampled_collectors_are_ticked_and_reported() -> None:
    with TrainingMonitor("exp", port=0, gpu=False, system=True, sample_interval=0.2,
                         handle_signals=False) as monitor:
        names = {collector.name for collector in monitor.sampled}
        assert names, "system/process collectors should be wired"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(c.last_success for c in monitor.sampled):
            time.sleep(0.05)
        got = scrape(monitor)
    for name in names:
        assert got[("trainmon_exporter_collector_success", ("collector", name))] == 1
    assert got[("trainmon_process_threads",)] >= 1


def test_gpu_collector_from_an_injected_source() -> None:
    replay = pytest.importorskip("devtools.nvml_replay").ReplaySource
    if not H200_FIXTURE.exists():
        pytest.skip(f"{H200_FIXTURE} not present")
    with TrainingMonitor("exp", port=0, gpu=True, system=False, nvml_source=replay(H200_FIXTURE),
                         sample_interval=0.2, handle_signals=False) as monitor:
        gpu = next(c for c in monitor.sampled if c.name == "gpu")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not gpu.last_success:
            time.sleep(0.05)
        got = scrape(monitor)
    assert got[("trainmon_exporter_collector_success", ("collector", "gpu"))] == 1
    assert any(key[0] == "trainmon_gpu_memory_total_bytes" for key in got)


def test_several_monitors_in_one_process_are_independent() -> None:
    with TrainingMonitor("a", port=0, **QUIET) as first, TrainingMonitor("b", port=0, **QUIET) as second:
        first.log_metrics({"loss": 1.0})
        second.log_metrics({"loss": 2.0})
        assert first.port != second.port
        assert scrape(first)[("trainmon_metric_value", ("key", "loss"))] == 1.0
        assert scrape(second)[("trainmon_metric_value", ("key", "loss"))] == 2.0


def test_port_in_use_warns_and_uses_a_free_port_reported_in_run_info(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        with caplog.at_level(logging.WARNING, logger="trainmon.exporter"), \
                TrainingMonitor("exp", port=busy, **QUIET) as monitor:
            assert monitor.port != busy
            info = [key for key in scrape(monitor) if key[0] == "trainmon_run_info"][0]
            assert dict(info[1:])["port"] == str(monitor.port)
    assert f"port {busy}" in caplog.text and "in use" in caplog.text


def test_port_false_disables_the_server_and_env_settings_apply() -> None:
    with TrainingMonitor("exp", port=False, **QUIET) as monitor:
        assert monitor.server is None and monitor.metrics_url is None
        monitor.log_metrics({"loss": 3.0})
        monitor.flush()
        assert monitor.step == 0
    env = {"TRAINMON_PORT": "off", "TRAINMON_RUN_ID": "job-7", "TRAINMON_PROJECT": "p"}
    with TrainingMonitor("exp", env=env, **QUIET) as monitor:
        assert monitor.metrics_url is None and monitor.run_id == "job-7" and monitor.project_name == "p"
    with TrainingMonitor("exp", port=0, env={"TRAINMON_PORT": "off"}, **QUIET) as monitor:
        assert monitor.port  # an explicit argument wins over the environment


def test_config_precedence_and_errors() -> None:
    assert resolve_config({}).port is None
    assert resolve_config({"TRAINMON_PORT": "9999", "TRAINMON_GPU": "0"}).port == 9999
    assert resolve_config({"TRAINMON_GPU": "no"}).gpu is False
    assert resolve_config({"TRAINMON_GPU": "no"}, gpu=False).gpu is False
    assert resolve_config({"TRAINMON_SAMPLE_INTERVAL": "1.5"}, sample_interval=2).sample_interval == 2
    assert resolve_config({"TRAINMON_PUSHGATEWAY_URL": "http://pg:9091"}).pushgateway_url == "http://pg:9091"
    with pytest.raises(ValueError, match="TRAINMON_PORT='abc'"):
        resolve_config({"TRAINMON_PORT": "abc"})
    with pytest.raises(ValueError, match="TRAINMON_GPU='maybe'"):
        resolve_config({"TRAINMON_GPU": "maybe"})
    with pytest.raises(ValueError, match="port must be"):
        resolve_config({}, port=70000)
    with pytest.raises(ValueError, match="sample_interval"):
        resolve_config({}, sample_interval=0)
    assert DEFAULT_BASE_PORT == 9441  # documented in docs/sdk.md


def test_context_manager_statuses_finish_idempotent_and_server_stops() -> None:
    statuses: list[str] = []
    with pytest.raises(RuntimeError), TrainingMonitor("exp", port=0, **QUIET) as monitor:
        monitor.on_finish.append(statuses.append)
        url = monitor.metrics_url
        raise RuntimeError("training blew up")
    assert monitor.status == "FAILED" and statuses == ["FAILED"]
    monitor.finish()
    assert monitor.status == "FAILED" and statuses == ["FAILED"]
    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=2)
    with TrainingMonitor("exp", port=0, **QUIET) as clean:
        clean.log_metrics({"loss": 1.0})
    assert clean.status == "COMPLETED"
    clean.log_metrics({"loss": 2.0})  # ignored, with one warning
    assert len(clean.training.buffer) == 0 and clean.training.steps_total == 1
    with pytest.raises(ValueError, match="status"):
        clean.finish("DONE")


def test_strict_raises_and_default_never_does() -> None:
    with TrainingMonitor("exp", port=False, strict=True, **QUIET) as strict:
        with pytest.raises(ValueError, match="not a real number"):
            strict.log_metrics({"loss": "nan?"})
        with pytest.raises(ValueError, match="normalised"):
            strict.log_metrics({"": 1.0})
        strict.log_metrics({"loss": 1.0})
    with TrainingMonitor("exp", port=False, **QUIET) as lenient:
        lenient.log_metrics({"loss": "nan?", "": 1.0, "ok": math.inf})
        lenient.log_metrics(MappingProxyType({"ok": 2.0}))
        with pytest.raises(TypeError, match="mapping"):
            lenient.log_metrics(5)  # type: ignore[arg-type]
        lenient.log_metrics([("ok", 1.0)])  # type: ignore[arg-type]  # has .copy(): skipped at drain, warned
        lenient.flush()
        assert lenient.step == 1
        assert lenient.training.rejected == {"invalid_name": 1, "non_numeric": 1}


def test_sink_seam_batch_size_tokens_and_checkpoints() -> None:
    points: list[tuple] = []
    with TrainingMonitor("exp", port=0, batch_size=8, point_sink=points.extend, **QUIET) as monitor:
        monitor.log_metrics({"train/loss": 0.5}, step=10, tokens=1000)
        monitor.log_metrics({"train/loss": 0.25}, tokens=1000)
        monitor.log_checkpoint("ckpt-11", step=11)
        got = scrape(monitor)
    assert [(key, step, value) for key, step, value, _ in points] == [("train_loss", 10, 0.5), ("train_loss", 11, 0.25)]
    assert got[("trainmon_samples_total",)] == 16
    assert got[("trainmon_tokens_total",)] == 2000
    assert got[("trainmon_checkpoints_total",)] == 1
    assert got[("trainmon_last_checkpoint_timestamp_seconds",)] > 0


def run_child(tmp_path: Path, body: str) -> subprocess.Popen:
    code = textwrap.dedent("""
        import sys, time
        from trainmon.exporter import TrainingMonitor
        status_file = sys.argv[1]
        def record(status):
            open(status_file, "w").write(status)
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "status")], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("previous", ["default", "python"])
def test_sigterm_finishes_failed_and_chains(tmp_path: Path, previous: str) -> None:
    child = run_child(tmp_path, f"""
        import signal
        if {previous == "python"!r}:
            signal.signal(signal.SIGTERM, lambda *a: (print("previous handler ran", flush=True), sys.exit(3)))
        monitor = TrainingMonitor("exp", port=0, gpu=False, system=False)
        monitor.on_finish.append(record)
        print("ready", flush=True)
        while True:
            monitor.log_metrics({{"loss": 1.0}})
            time.sleep(0.01)
    """)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=30)
    assert (tmp_path / "status").read_text() == "FAILED", err
    if previous == "python":
        assert child.returncode == 3 and "previous handler ran" in out
    else:
        assert child.returncode == -signal.SIGTERM


@pytest.mark.parametrize("style", ["with", "plain"])
def test_sigint_finishes_failed_then_exits_as_interrupted(tmp_path: Path, style: str) -> None:
    """Ctrl-C: KeyboardInterrupt inside the with block (or uncaught, finished at exit) -> FAILED, exit by SIGINT."""
    loop = """
        print("ready", flush=True)
        while True:
            monitor.log_metrics({"loss": 1.0})
            time.sleep(0.01)
    """
    if style == "with":
        body = 'with TrainingMonitor("exp", port=0, gpu=False, system=False) as monitor:\n' \
               '    monitor.on_finish.append(record)\n' + textwrap.indent(textwrap.dedent(loop), "    ")
    else:
        body = 'monitor = TrainingMonitor("exp", port=0, gpu=False, system=False)\n' \
               'monitor.on_finish.append(record)\n' + textwrap.dedent(loop)
    child = run_child(tmp_path, body)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGINT)
    _, err = child.communicate(timeout=30)
    assert (tmp_path / "status").read_text() == "FAILED", err
    assert "KeyboardInterrupt" in err
    assert child.returncode == -signal.SIGINT, err


@pytest.mark.parametrize(("ending", "status"), [("pass", "COMPLETED"), ("raise SystemExit(0)", "COMPLETED"),
                                                ("raise RuntimeError('boom')", "FAILED")])
def test_interpreter_exit_finishes_the_run(tmp_path: Path, ending: str, status: str) -> None:
    child = run_child(tmp_path, f"""
        monitor = TrainingMonitor("exp", port=0, gpu=False, system=False)
        monitor.on_finish.append(record)
        monitor.log_metrics({{"loss": 1.0}})
        {ending}
    """)
    child.communicate(timeout=30)
    assert (tmp_path / "status").read_text() == status


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="experiment_name"):
        TrainingMonitor("", **QUIET)
    with pytest.raises(ValueError, match="extrema_window"):
        TrainingMonitor("exp", port=False, extrema_window=0, **QUIET)
    with pytest.raises(ValueError, match="batch_size"):
        TrainingMonitor("exp", port=0, batch_size=0, **QUIET)
    with pytest.raises(ValueError, match="buffer_size"):
        TrainingMonitor("exp", port=0, buffer_size=0, **QUIET)
