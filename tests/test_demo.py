"""`make demo` (python -m trainmon.exporter.demo): runs briefly, prints a live PromQL result, stops on Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys

import pytest
import requests
from support.procs import require_binary

pytestmark = pytest.mark.integration

DEMO = [sys.executable, "-m", "trainmon.exporter.demo"]
PROMQL_RESULT = re.compile(r'PromQL .+ -> trainmon_metric_value\{key="train_loss",run_id="[^"]+"\} = \d+\.\d+')


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*DEMO, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_brief_run_prints_a_promql_result_and_exits_cleanly() -> None:
    require_binary("prometheus")
    demo = start("--duration", "5", "--query-every", "1", "--rate", "50")
    output, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, output
    assert PROMQL_RESULT.search(output), output
    assert "demo: servers stopped" in output


def test_ctrl_c_stops_the_run_and_its_child_servers() -> None:
    require_binary("prometheus")
    demo = start("--query-every", "1")
    lines: list[str] = []
    prometheus_url = None
    try:
        for line in demo.stdout:  # type: ignore[union-attr]
            lines.append(line)
            if match := re.search(r"Prometheus at (http://127\.0\.0\.1:\d+)", line):
                prometheus_url = match.group(1)
            if PROMQL_RESULT.search(line):
                break
        assert prometheus_url, "".join(lines)
        assert requests.get(f"{prometheus_url}/-/ready", timeout=5).status_code == 200
        demo.send_signal(signal.SIGINT)
        rest, _ = demo.communicate(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    output = "".join(lines) + rest
    assert demo.returncode == 0, output
    assert "interrupted" in output and "demo: servers stopped" in output
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{prometheus_url}/-/ready", timeout=5)
