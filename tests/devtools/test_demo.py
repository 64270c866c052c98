"""`make demo` (python -m devtools.demo): the main job on SQLite with real servers, then everything stops.

A short run must show: the run, its points, params, tags, note, checkpoints, image and histogram in the API's
SQLite file; a live PromQL answer for the trainer Prometheus found through the API's /api/sd; the compare table;
and no child process left. Ctrl-C ends it the same way (run COMPLETED, children stopped, exit 0).
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import requests
from support.procs import require_binary

from devtools import REPO

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "devtools.demo"]  # from the repository root, as `make demo` runs it
PROMQL_RESULT = re.compile(r'PromQL trainmon_metric_value\{job="trainmon-trainers",key="train_loss"\} -> '
                           r'trainmon_metric_value\{key="train_loss",run_id="([^"]+)"\} = \d+\.\d+')
CHILD = re.compile(r"demo: started ([\w -]+) \(pid (\d+)\)")
URL = re.compile(r"demo: (?:Prometheus|metadata API|Pushgateway|Alertmanager) at (http://127\.0\.0\.1:\d+)")


def start(data_dir: Path, *args: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name != "ENABLE_NOTIFICATIONS"}
    return subprocess.Popen([*DEMO, "--data-dir", str(data_dir), "--query-every", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "PYTHONUNBUFFERED": "1"}, start_new_session=True, cwd=REPO)


def stored(data_dir: Path) -> dict:
    """What reached the metadata API, read from its SQLite file after the demo exited."""
    with sqlite3.connect(data_dir / "trainmon.db") as db:
        (run_id, status, params), = db.execute("SELECT id, status, params FROM runs").fetchall()
        return {
            "run_id": run_id, "status": status, "params": json.loads(params),
            "loss_points": db.execute("SELECT count(*) FROM metric_points WHERE key = 'train_loss'").fetchone()[0],
            "tags": dict(db.execute("SELECT key, value FROM run_tags").fetchall()),
            "notes": [text for (text,) in db.execute("SELECT text FROM notes")],
            "checkpoints": db.execute("SELECT count(*) FROM checkpoints").fetchone()[0],
            "artifact_kinds": {kind for (kind,) in db.execute("SELECT kind FROM artifacts")},
        }


def assert_children_gone(output: str, required: tuple[str, ...] = ("metadata API", "prometheus")) -> None:
    children = {name: int(pid) for name, pid in CHILD.findall(output)}
    assert set(required) <= set(children), output
    for name, pid in children.items():
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
            pytest.fail(f"{name} (pid {pid}) still running")
    for url in URL.findall(output):
        with pytest.raises(requests.ConnectionError):
            requests.get(url, timeout=5)


def assert_run_stored(data_dir: Path, output: str) -> None:
    run = stored(data_dir)
    assert run["status"] == "COMPLETED", output
    assert run["loss_points"] > 0
    assert run["params"]["optimizer"]["name"] == "adamw"
    assert run["tags"] == {"source": "make demo", "dataset": "synthetic"}
    assert len(run["notes"]) == 1
    assert run["checkpoints"] >= 1
    assert run["artifact_kinds"] == {"image", "histogram"}
    assert re.search(rf"^{re.escape(run['run_id'])}\s+COMPLETED\s+\d+\.\d+", output, re.MULTILINE), output


def test_brief_run_ships_to_the_api_prints_promql_and_the_compare_table_then_stops_everything(
        tmp_path: Path) -> None:
    require_binary("prometheus")
    data_dir = tmp_path / "data"
    demo = start(data_dir, "--steps", "250", "--rate", "50")
    output, _ = demo.communicate(timeout=150)
    assert demo.returncode == 0, output
    match = PROMQL_RESULT.search(output)
    assert match, output
    assert_run_stored(data_dir, output)
    assert stored(data_dir)["run_id"] == match.group(1)
    assert stored(data_dir)["checkpoints"] == 2  # mid-way and at the end
    assert "/api/experiments" in output and f"/api/runs/{match.group(1)}/metrics/train_loss?max_points=" in output
    assert "demo: firing alerts:" in output
    assert "demo: servers stopped" in output
    assert_children_gone(output)


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_finishes_the_run_completed_and_stops_every_child(tmp_path: Path, stop: str) -> None:
    """Ctrl-C in a terminal signals the whole foreground process group; SIGTERM (e.g. `kill`) only the demo."""
    require_binary("prometheus")
    data_dir = tmp_path / "data"
    demo = start(data_dir)
    lines: list[str] = []
    watchdog = threading.Timer(120, demo.kill)  # never hang on a demo that prints no PromQL result
    watchdog.start()
    try:
        for line in demo.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if PROMQL_RESULT.search(line):
                break
        assert PROMQL_RESULT.search("".join(lines)), "".join(lines)
        if stop == "ctrl-c":
            os.killpg(demo.pid, signal.SIGINT)  # the demo's group: its servers run in their own sessions
        else:
            demo.send_signal(signal.SIGTERM)
        rest, _ = demo.communicate(timeout=90)
    finally:
        watchdog.cancel()
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    assert "interrupted at step" in output and "demo: servers stopped" in output
    assert_run_stored(data_dir, output)
    assert_children_gone(output)


def test_without_the_server_extra_prometheus_scrapes_the_trainer_directly(tmp_path: Path) -> None:
    require_binary("prometheus")
    code = ("import sys; sys.modules['fastapi'] = None  # as if the [server] extra were not installed\n"
            "from devtools.demo import main; sys.exit(main(sys.argv[1:]))")
    demo = subprocess.run([sys.executable, "-c", code, "--data-dir", str(tmp_path / "data"), "--duration", "3",
                           "--rate", "50", "--query-every", "1"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, cwd=REPO)
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    assert "fastapi not installed; running without the metadata API" in output
    assert re.search(r'PromQL trainmon_metric_value\{job="trainmon-demo-trainer",key="train_loss"\} -> '
                     r'trainmon_metric_value\{key="train_loss",run_id="[^"]+"\} = \d+\.\d+', output), output
    assert not (tmp_path / "data").exists()
    assert_children_gone(output, required=("prometheus",))


def test_rendered_prometheus_config_keeps_the_repo_jobs_and_rules_and_rejects_a_lost_job(tmp_path: Path) -> None:
    import yaml

    from devtools.stack_render import RULES_DIR, render_prometheus_config

    config = yaml.safe_load(render_prometheus_config(api_url="http://127.0.0.1:5001", pushgateway_url=None,
                                                     alertmanager_url=None, interval="2s"))
    assert [job["job_name"] for job in config["scrape_configs"]] == ["trainmon-trainers", "trainmon-api"]
    assert config["scrape_configs"][0]["http_sd_configs"][0]["url"] == "http://127.0.0.1:5001/api/sd"
    assert config["scrape_configs"][0]["honor_labels"] is True
    assert config["rule_files"] == [str(RULES_DIR / "*.yml")] and "alerting" not in config
    broken = tmp_path / "prometheus.yml"
    broken.write_text(yaml.safe_dump({"global": {}, "scrape_configs": [{"job_name": "pushgateway"}]}))
    with pytest.raises(ValueError, match="trainmon-trainers, trainmon-api"):
        render_prometheus_config(api_url=None, pushgateway_url=None, alertmanager_url=None, source=broken)


def test_importing_the_demo_loads_no_server_code() -> None:
    code = ("import sys, devtools.demo, devtools.stack_render\n"
            "print(sorted(m for m in ('fastapi', 'uvicorn', 'sqlalchemy', 'yaml', 'trainmon.metadata_api') "
            "if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert loaded.stdout.strip() == "[]", loaded.stdout + loaded.stderr
