"""Start and stop the real servers the tests talk to, on 127.0.0.1, free ports, temp dirs.

The process basics (`free_port`, `wait_until`, `http_ok`, `ManagedProcess`) come from devtools/procs.py, shared
with the demo and the bench scripts; here: what only tests need (`require_binary`, which fails instead of skipping
under CI=true, and the servers' context managers).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
import requests

from devtools.procs import ManagedProcess, free_port, http_ok, wait_until  # also the tests' names for them

IN_CI = os.environ.get("CI", "").lower() == "true"


def require_binary(name: str, *candidates: str) -> str:
    """Path of a binary the test needs; skip locally, fail under CI=true, when it is missing."""
    for candidate in (name, *candidates):
        executable = os.path.isabs(candidate) and os.access(candidate, os.X_OK)
        path = shutil.which(candidate) or (candidate if executable else None)
        if path:
            return path
    message = f"{name} is not installed (make test installs it)"
    if IN_CI:
        pytest.fail(message)
    pytest.skip(message)


def _drop_privileges(user: str) -> Callable[[], None]:
    entry = pwd.getpwnam(user)

    def preexec() -> None:
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)

    return preexec


# --- Prometheus ---


class Prometheus:
    """A real Prometheus with a test-written config; `query()` runs PromQL over /api/v1/query."""

    def __init__(self, process: ManagedProcess, url: str, config_path: Path):
        self.process = process
        self.url = url
        self.config_path = config_path

    def query(self, promql: str, at: float | None = None) -> list[dict]:
        params = {"query": promql}
        if at is not None:
            params["time"] = str(at)
        answer = requests.get(f"{self.url}/api/v1/query", params=params, timeout=10).json()
        if answer.get("status") != "success":
            raise AssertionError(f"PromQL {promql!r} failed: {answer}")
        return answer["data"]["result"]

    def query_range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[dict]:
        params = {"query": promql, "start": str(start), "end": str(end), "step": str(step)}
        answer = requests.get(f"{self.url}/api/v1/query_range", params=params, timeout=10).json()
        if answer.get("status") != "success":
            raise AssertionError(f"PromQL {promql!r} failed: {answer}")
        return answer["data"]["result"]

    def targets(self) -> list[dict]:
        return requests.get(f"{self.url}/api/v1/targets", timeout=5).json()["data"]["activeTargets"]

    def wait_for(self, promql: str, timeout: float = 30.0,
                 predicate: Callable[[list[dict]], bool] = bool) -> list[dict]:
        """Poll a query until `predicate(result)` holds; return that result."""
        box: list[list[dict]] = []

        def check() -> bool:
            result = self.query(promql)
            box[:] = [result]
            return predicate(result)

        wait_until(check, timeout=timeout, what=f"PromQL {promql!r}")
        return box[0]

    def reload(self) -> None:
        requests.post(f"{self.url}/-/reload", timeout=10).raise_for_status()


@contextlib.contextmanager
def run_prometheus(config_yaml: str, workdir: Path | None = None, extra_files: dict[str, str] | None = None,
                   port: int | None = None, extra_args: Sequence[str] = ()) -> Iterator[Prometheus]:
    """Start Prometheus with `config_yaml` (may use `{port}`-free text) and `extra_args` (flags such as
    `--web.enable-remote-write-receiver`); stop it on exit."""
    binary = require_binary("prometheus")
    with _workdir(workdir) as base:
        _write_files(base, extra_files)
        config_path = base / "prometheus.yml"
        config_path.write_text(config_yaml)
        port = port or free_port()
        process = ManagedProcess(
            [binary, f"--config.file={config_path}", f"--storage.tsdb.path={base / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}", "--web.enable-lifecycle", "--log.level=warn", *extra_args],
            base / "prometheus.log")
        with _ready(process, f"http://127.0.0.1:{port}", "prometheus ready") as url:
            yield Prometheus(process, url, config_path)


def scrape_config(job: str, targets: Sequence[str], interval: str = "1s", honor_labels: bool = False,
                  metrics_path: str = "/metrics") -> str:
    """One `scrape_configs` entry as YAML text."""
    quoted = ", ".join(f"'{target}'" for target in targets)
    return (f"  - job_name: '{job}'\n    scrape_interval: {interval}\n    scrape_timeout: {interval}\n"
            f"    honor_labels: {str(honor_labels).lower()}\n    metrics_path: '{metrics_path}'\n"
            f"    static_configs:\n      - targets: [{quoted}]\n")


def prometheus_config(*scrape_configs: str, interval: str = "1s", extra: str = "") -> str:
    body = "".join(scrape_configs) or "  []\n"
    return (f"global:\n  scrape_interval: {interval}\n  evaluation_interval: {interval}\n{extra}"
            f"scrape_configs:\n{body}")


# --- Pushgateway and Alertmanager ---


@contextlib.contextmanager
def run_pushgateway(workdir: Path | None = None) -> Iterator[str]:
    """Start a Pushgateway; yield its base URL."""
    binary = require_binary("prometheus-pushgateway", "pushgateway")
    with _workdir(workdir) as base:
        port = free_port()
        # Debian's build persists to /var/lib/prometheus/pushgateway.data by default: keep each one's own.
        process = ManagedProcess([binary, f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn",
                                  f"--persistence.file={base / 'pushgateway.data'}"],
                                 base / "pushgateway.log")
        with _ready(process, f"http://127.0.0.1:{port}", "pushgateway ready") as url:
            yield url


@contextlib.contextmanager
def run_alertmanager(config_yaml: str, workdir: Path | None = None,
                     extra_files: dict[str, str] | None = None) -> Iterator[str]:
    """Start an Alertmanager with `config_yaml`; yield its base URL."""
    binary = require_binary("prometheus-alertmanager", "alertmanager")
    with _workdir(workdir) as base:
        _write_files(base, extra_files)
        config_path = base / "alertmanager.yml"
        config_path.write_text(config_yaml)
        port = free_port()
        process = ManagedProcess(
            [binary, f"--config.file={config_path}", f"--storage.path={base / 'data'}",
             f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
             "--log.level=warn"],
            base / "alertmanager.log")
        with _ready(process, f"http://127.0.0.1:{port}", "alertmanager ready") as url:
            yield url


# --- PostgreSQL ---


@contextlib.contextmanager
def run_postgres(workdir: Path | None = None) -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster (initdb + pg_ctl); yield a `postgresql+psycopg://` URL.

    As root the cluster runs as the `postgres` user (or `nobody`), since PostgreSQL refuses to run as root.
    """
    initdb = require_binary("initdb", *sorted(map(str, Path("/usr/lib/postgresql").glob("*/bin/initdb"))))
    bindir = Path(os.path.realpath(initdb)).parent
    user = None
    if os.geteuid() == 0:
        user = "postgres" if _user_exists("postgres") else "nobody"
    with _workdir(workdir) as base:
        data = base / "pgdata"
        sockets = base / "sock"
        sockets.mkdir()
        if user:
            entry = pwd.getpwnam(user)
            os.chmod(base, 0o755)
            for path in (base, sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", "trainmon", "--auth=trust", "-E", "UTF8",
                        "--no-sync"], check=True, capture_output=True,
                       preexec_fn=_drop_privileges(user) if user else None)
        port = free_port()
        log = base / "postgres.log"
        if user:
            log.touch()
            os.chown(log, pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid)
        process = ManagedProcess(
            [str(bindir / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port), "-k", str(sockets),
             "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
             "-c", "max_connections=200"],
            log, preexec=_drop_privileges(user) if user else None)
        url = f"postgresql+psycopg://trainmon@127.0.0.1:{port}/postgres"
        try:
            process.wait_ready(lambda: _pg_accepts(bindir, port), what="postgres ready")
            yield url
        finally:
            process.stop()


@contextlib.contextmanager
def fresh_postgres_database(server_url: str, prefix: str = "t") -> Iterator[str]:
    """A new empty database on the server of `server_url` (as `run_postgres` yields); dropped, connections and
    all, on exit."""
    import uuid

    import psycopg

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    admin = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    try:
        yield server_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as connection:
            connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _pg_accepts(bindir: Path, port: int) -> bool:
    result = subprocess.run([str(bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True)
    return result.returncode == 0


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@contextlib.contextmanager
def _ready(process: ManagedProcess, url: str, what: str) -> Iterator[str]:
    """`url` once `url`/-/ready answers 200 (the Prometheus-family readiness endpoint); `process` stopped on exit."""
    try:
        process.wait_ready(http_ok(f"{url}/-/ready"), what=what)
        yield url
    finally:
        process.stop()


def _write_files(base: Path, files: dict[str, str] | None) -> None:
    """Write `files` (relative path -> text) under `base`, creating folders."""
    for name, content in (files or {}).items():
        (base / name).parent.mkdir(parents=True, exist_ok=True)
        (base / name).write_text(content)


@contextlib.contextmanager
def _workdir(given: Path | None) -> Iterator[Path]:
    if given is not None:
        given.mkdir(parents=True, exist_ok=True)
        yield given
        return
    path = Path(tempfile.mkdtemp(prefix="trainmon-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def python_subprocess(code: str, log_path: Path, env: dict[str, str] | None = None) -> ManagedProcess:
    """Run `code` in a fresh interpreter of this venv (for trainers and servers under test)."""
    merged = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return ManagedProcess([sys.executable, "-c", code], log_path, env=merged)
