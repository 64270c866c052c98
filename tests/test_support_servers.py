"""The test harness itself: each real server starts, answers and stops."""

from __future__ import annotations

import requests
import sqlalchemy
from support.procs import prometheus_config, run_alertmanager, run_prometheus


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
