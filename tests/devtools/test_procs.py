"""The process helpers (devtools/procs.py, shared by the demo, bench and tests) and the test harness built on them:
each real server starts, answers and stops."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
import sqlalchemy
from support.procs import prometheus_config, run_alertmanager, run_prometheus

from devtools import REPO
from devtools.procs import ManagedProcess, free_port, http_ok, wait_until


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_free_port_is_bindable_on_loopback() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", free_port()))


def test_wait_until_retries_errors_and_names_what_it_waited_for() -> None:
    answers = iter([ValueError("not yet"), False, True])

    def check() -> bool:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    wait_until(check, timeout=5, interval=0.01)
    with pytest.raises(TimeoutError, match=r"waiting for the moon \(last error: None\)"):
        wait_until(lambda: False, timeout=0.2, interval=0.05, what="the moon")


def test_stop_ends_the_whole_process_group(tmp_path: Path) -> None:
    code = ("import subprocess, sys, time\n"
            "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(child.pid, flush=True); time.sleep(60)")
    process = ManagedProcess([sys.executable, "-c", code], tmp_path / "parent.log")
    wait_until(lambda: process.log_tail().strip().isdigit(), timeout=20, what="grandchild pid")
    grandchild = int(process.log_tail())
    process.stop(timeout=5)
    assert not process.alive()
    wait_until(lambda: gone(grandchild), timeout=10, what="grandchild gone")


def test_wait_ready_fails_fast_with_the_log_when_the_child_exits(tmp_path: Path) -> None:
    process = ManagedProcess([sys.executable, "-c", "print('cannot bind'); raise SystemExit(3)"],
                             tmp_path / "server.log")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match=r"exited with 3:\ncannot bind"):
        process.wait_ready(http_ok(f"http://127.0.0.1:{free_port()}/"), timeout=30)
    assert time.monotonic() - started < 10


def test_wait_ready_answers_once_the_child_serves(tmp_path: Path) -> None:
    port = free_port()
    process = ManagedProcess([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                             tmp_path / "http.log", cwd=tmp_path)
    try:
        process.wait_ready(http_ok(f"http://127.0.0.1:{port}/"), timeout=30, what="http.server")
    finally:
        process.stop()
    assert not process.alive()


def test_a_child_started_with_die_with_parent_ends_when_its_parent_is_killed(tmp_path: Path) -> None:
    code = ("import sys, time\nfrom pathlib import Path\nfrom devtools.procs import ManagedProcess\n"
            "child = ManagedProcess([sys.executable, '-c', 'import time; time.sleep(60)'], Path(sys.argv[1]),"
            " die_with_parent=True)\n"
            "print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "child.log")], stdout=subprocess.PIPE,
                              text=True, cwd=REPO)
    try:
        child = int(parent.stdout.readline())  # type: ignore[union-attr]
    finally:
        parent.kill()
        parent.wait()
    wait_until(lambda: gone(child) or _zombie(child), timeout=10, what="child gone with its parent")


def _zombie(pid: int) -> bool:
    """An ended child of a dead parent may linger as a zombie until init reaps it."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_prometheus_starts_and_answers_promql() -> None:
    with run_prometheus(prometheus_config()) as prom:
        assert prom.query("vector(42)")[0]["value"][1] == "42"
        process = prom.process
    assert not process.alive()


def test_pushgateway_accepts_a_push(pushgateway_url: str) -> None:
    response = requests.put(f"{pushgateway_url}/metrics/job/harness", data="harness_probe 1\n", timeout=5)
    assert response.status_code == 200
    assert "harness_probe" in requests.get(f"{pushgateway_url}/metrics", timeout=5).text


def test_alertmanager_starts() -> None:
    config = "route:\n  receiver: 'null'\nreceivers:\n  - name: 'null'\n"
    with run_alertmanager(config) as url:
        assert requests.get(f"{url}/api/v2/status", timeout=5).json()["config"]["original"]


def test_postgres_accepts_sql(postgres_url: str) -> None:
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:
        assert connection.execute(sqlalchemy.text("select 1")).scalar() == 1
    engine.dispose()
