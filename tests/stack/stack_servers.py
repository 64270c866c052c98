"""The repository's stack configs rendered for tests (hosts, ports, intervals only) and the API as a real server.

Nothing here forks a config: each function loads the file docker-compose.yml mounts, checks the jobs/receivers it
expects are there, and rewrites addresses and timings so the real binaries run fast on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import requests
import yaml
from repo_files import PROMETHEUS_DIR, RULES_DIR, load_yaml
from support.procs import ManagedProcess, free_port, http_ok

DURATION = re.compile(r"(\d+)([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _hostport(url: str) -> str:
    return urlsplit(url).netloc


def render_prometheus_config(*, api_url: str | None, pushgateway_url: str | None, alertmanager_url: str | None,
                             rules_dir: Path = RULES_DIR, interval: str = "1s") -> str:
    """prometheus/prometheus.yml with its targets pointed at local servers and every interval set to `interval`.

    Jobs whose server is not given are dropped; the self-scrape jobs are dropped.
    """
    config = load_yaml(PROMETHEUS_DIR / "prometheus.yml")
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str(rules_dir / "*.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert {"trainmon-trainers", "pushgateway", "trainmon-api"} <= set(jobs), "prometheus.yml lost a job"
    kept = []
    if api_url:
        jobs["trainmon-trainers"]["http_sd_configs"][0].update(url=f"{api_url}/api/sd", refresh_interval=interval)
        jobs["trainmon-api"]["static_configs"] = [{"targets": [_hostport(api_url)]}]
        kept += [jobs["trainmon-trainers"], jobs["trainmon-api"]]
    if pushgateway_url:
        jobs["pushgateway"]["static_configs"] = [{"targets": [_hostport(pushgateway_url)]}]
        kept.append(jobs["pushgateway"])
    config["scrape_configs"] = kept
    if alertmanager_url:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [_hostport(alertmanager_url)]}]
    else:
        config.pop("alerting")
    return yaml.safe_dump(config, sort_keys=False)


def _scale_duration(text: str, factor: float) -> str:
    seconds = sum(int(number) * SECONDS[unit] for number, unit in DURATION.findall(text))
    return f"{max(1, round(seconds * factor))}s"


def render_scaled_rules(out_dir: Path, factor: float, minimum_for: str = "1s") -> Path:
    """prometheus/rules/*.yml with every range `[...]` and `for:` multiplied by `factor` (time compressed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(RULES_DIR.glob("*.yml")):
        config = load_yaml(path)
        for group in config["groups"]:
            for rule in group["rules"]:
                rule["expr"] = re.sub(r"\[(\w+)\]", lambda m: f"[{_scale_duration(m.group(1), factor)}]", rule["expr"])
                if "for" in rule:
                    rule["for"] = max(_scale_duration(rule["for"], factor), minimum_for,
                                      key=lambda value: int(value[:-1]))
        (out_dir / path.name).write_text(yaml.safe_dump(config, sort_keys=False))
    return out_dir


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty PostgreSQL database on the server of `server_url` (a postgresql+psycopg:// URL); dropped after."""
    name = f"stack_{uuid.uuid4().hex[:12]}"
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def run_api(database_url: str, workdir: Path, **env: str) -> Iterator[str]:
    """The metadata API (`python -m trainmon.metadata_api`) on a free port; yields its base URL once /readyz."""
    port = free_port()
    environment = {**os.environ, "DATABASE_URL": database_url, "HOST": "127.0.0.1", "PORT": str(port),
                   "ARTIFACT_ROOT": str(workdir / "artifacts"), "LOG_LEVEL": "WARNING", **env}
    process = ManagedProcess([sys.executable, "-m", "trainmon.metadata_api"], workdir / "api.log",
                             env=environment, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_ready(http_ok(f"{url}/readyz"), timeout=60, what="metadata API ready")
        yield url
    finally:
        process.stop()


def api_post(url: str, path: str, body: dict) -> dict:
    response = requests.post(f"{url}{path}", json=body, timeout=10)
    assert response.status_code < 300, f"POST {path}: {response.status_code} {response.text}"
    return response.json() if response.content else {}
