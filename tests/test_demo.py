"""`make demo` (python -m trainmon.exporter.demo): the main job on SQLite with real servers, then everything stops.

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

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "trainmon.exporter.demo"]
PROMQL_RESULT = re.compile(r'PromQL trainmon_metric_value\{job="trainmon-trainers",key="train_loss"\} -> '
                           r'trainmon_metric_value\{key="train_loss",run_id="([^"]+)"\} = \d+\.\d+')
CHILD = re.compile(r"demo: started ([\w -]+) \(pid (\d+)\)")
URL = re.compile(r"demo: (?:Prometheus|metadata API|Pushgateway|Alertmanager) at (http://127\.0\.0\.1:\d+)")


def start(data_dir: Path, *args: str) -> subprocess.Popen:
    env = {name: value for name, value in os.environ.items() if name != "ENABLE_NOTIFICATIONS"}
    return subprocess.Popen([*DEMO, "--data-dir", str(data_dir), "--query-every", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**env, "PYTHONUNBUFFERED": "1"})


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


def assert_children_gone(output: str) -> None:
    children = {name: int(pid) for name, pid in CHILD.findall(output)}
    assert {"metadata API", "prometheus"} <= set(children), output
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
    demo = start(data_dir, "--duration", "5", "--rate", "50")
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


def test_ctrl_c_finishes_the_run_completed_and_stops_every_child(tmp_path: Path) -> None:
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
        demo.send_signal(signal.SIGINT)
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
