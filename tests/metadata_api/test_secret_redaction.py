"""No secret reaches a log, stdout or stderr (issue 9, item 11).

Secrets are planted where an operator puts them (the database password in DATABASE_URL, Alertmanager basic
auth in ALERTMANAGER_URL, API token values in Authorization headers), the failure paths that used to print them
are driven (a bad DATABASE_URL through `python -m trainmon.metadata_api` and `trainmon serve`, a failing
lifecycle notification, a stream of authentication failures, with LOG_LEVEL=DEBUG), everything the processes
write is captured, and no planted value may appear in it, plain or URL-encoded.
"""

from __future__ import annotations

import contextlib
import io
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import pytest
import requests
from sqlalchemy.orm import Session, sessionmaker
from support.api import run_api
from support.procs import free_port, wait_until
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.db import make_engine, write_sessions
from trainmon.metadata_api.logging import JsonFormatter, RedactingFilter, configure_logging
from trainmon.metadata_api.migrations import upgrade
from trainmon.metadata_api.redact import redact, redact_url, register_settings
from trainmon.metadata_api.services.notifications import AlertmanagerNotifier, RunEvent
from trainmon.metadata_api.settings import Settings

DB_PASSWORD = "Db-Pa55w0rd-7f3a9c/q"  # '/' is URL-encoded in the URL: both spellings must stay out
AM_PASSWORD = "Am-S3cret-51d0e2"
WRONG_TOKEN = "tm_Planted-Wrong-Token-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
TRAINMON = Path(sys.executable).parent / "trainmon"


def bad_database_urls(closed_port: int) -> list[str]:
    password = quote(DB_PASSWORD, safe="")
    return [f"mysql://trainmon:{password}@db.internal/trainmon",  # not supported: a settings error
            f"postgresql+psycopg://trainmon:{password}@127.0.0.1:notaport/trainmon",  # unparsable port
            f"postgresql://trainmon:{password}@127.0.0.1:{closed_port}/trainmon",  # nobody listens
            f"postgresql+psycopg://trainmon:{password}@[::1/trainmon"]  # a broken address


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        for spelling in {secret, quote(secret, safe=""), quote(secret)}:
            assert spelling not in text, f"{spelling!r} leaked:\n{text[-3000:]}"


class _Failing(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.send_response(500)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def failing_alertmanager() -> Iterator[int]:
    """An "Alertmanager" on 127.0.0.1 that answers 500 to everything; yields its port."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("command", [["-m", "trainmon.metadata_api"], ["serve"]], ids=["python-m", "trainmon-serve"])
def test_a_bad_database_url_never_prints_its_password(tmp_path: Path, command: list[str]) -> None:
    argv = [sys.executable, *command] if command[0] == "-m" else [str(TRAINMON), *command]
    for url in bad_database_urls(free_port()):
        env = {"PATH": "/usr/bin:/bin", "DATABASE_URL": url, "LOG_LEVEL": "DEBUG", "HOME": str(tmp_path)}
        result = subprocess.run([*argv, "--port", str(free_port())], capture_output=True, text=True, env=env,
                                cwd=tmp_path, timeout=120)
        assert result.returncode == 2, (url, result.stdout, result.stderr)
        assert result.stderr.startswith("trainmon: ") and "Traceback" not in result.stderr
        assert_no_secret(result.stdout + result.stderr, DB_PASSWORD)


@pytest.fixture
def token_database(tmp_path: Path) -> tuple[str, str]:
    """A migrated SQLite file with one write token: (its URL, the token)."""
    url = f"sqlite:///{tmp_path / 'api.db'}"
    engine = make_engine(url)
    try:
        upgrade(engine)
        sessions: sessionmaker[Session] = write_sessions(engine)
        with sessions() as session:
            token = create_token(session, "default", "write")
            session.commit()
    finally:
        engine.dispose()
    return url, token


@pytest.mark.parametrize("alertmanager", ["answers-500", "unreachable"])
def test_a_running_server_logs_no_secret(tmp_path: Path, token_database: tuple[str, str], alertmanager: str) -> None:
    database_url, token = token_database
    with contextlib.ExitStack() as stack:
        port = stack.enter_context(failing_alertmanager()) if alertmanager == "answers-500" else free_port()
        alertmanager_url = f"http://alerts:{AM_PASSWORD}@127.0.0.1:{port}"
        base = stack.enter_context(run_api(database_url, tmp_path, LOG_LEVEL="DEBUG", ENABLE_NOTIFICATIONS="true",
                                           ALERTMANAGER_URL=alertmanager_url, AUTH_FAILURES_PER_MINUTE="5"))
        session = stack.enter_context(requests.Session())
        good = {"Authorization": f"Bearer {token}"}
        assert session.post(f"{base}/api/runs", json={"experiment": "e", "run_id": "r"}, headers=good).ok
        assert session.post(f"{base}/api/runs/r/status", json={"status": "COMPLETED"}, headers=good).ok
        log = tmp_path / "api.log"
        wait_until(lambda: "lifecycle notification" in log.read_text(), timeout=30, what="the notification warning")
        codes = {session.get(f"{base}/api/experiments", headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
                             ).status_code for _ in range(10)}
        assert codes == {401, 429}
        wait_until(lambda: "failed authentications" in log.read_text(), timeout=30, what="the rate-limit warning")
    text = log.read_text()
    assert "lifecycle notification to http://alerts:***@127.0.0.1" in text
    assert_no_secret(text, AM_PASSWORD, WRONG_TOKEN, token)


def test_a_failing_notification_logs_the_url_without_credentials(caplog: pytest.LogCaptureFixture) -> None:
    with failing_alertmanager() as port:
        notifier = AlertmanagerNotifier(f"http://alerts:{AM_PASSWORD}@127.0.0.1:{port}", "http://g", "http://a")
        with caplog.at_level(logging.WARNING, logger="trainmon.metadata_api.notifications"):
            notifier.notify([RunEvent("r", "e", "p", "FAILED")]).join(timeout=10)
    assert "lifecycle notification to http://alerts:***@127.0.0.1" in caplog.text
    assert_no_secret(caplog.text, AM_PASSWORD)


@pytest.fixture
def logging_restored() -> Iterator[None]:
    """`configure_logging` changes process-wide loggers: put them back afterwards (caplog needs propagation)."""
    loggers = [logging.getLogger(name) for name in ("trainmon", "uvicorn", "uvicorn.error", "uvicorn.access")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


@pytest.mark.usefixtures("logging_restored")
def test_the_log_handler_masks_what_code_forgot(monkeypatch: pytest.MonkeyPatch) -> None:
    """The safety net: a message, its arguments and a traceback carrying secrets come out masked."""
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    configure_logging("DEBUG")
    register_settings(Settings(_env_file=None, database_url=f"postgresql://u:{quote(DB_PASSWORD, safe='')}@db/x",
                               slack_webhook_url="https://hooks.example/services/hooks-secret-path-123"))
    log = logging.getLogger("trainmon.metadata_api.test_redaction")
    log.warning("connecting to postgresql://u:%s@db/x as %s", "hunter2-unregistered", DB_PASSWORD)
    log.info("header %s", {"Authorization": f"Bearer {WRONG_TOKEN}"})
    log.info("posting to https://hooks.example/services/hooks-secret-path-123")
    try:
        raise RuntimeError(f"cannot reach http://alerts:{AM_PASSWORD}@am:9093 with password={DB_PASSWORD}")
    except RuntimeError:
        log.exception("failed")
    text = stream.getvalue()
    assert text.count("\n") == 4 and "u:***@db" in text and "Bearer ***" in text
    assert_no_secret(text, DB_PASSWORD, AM_PASSWORD, WRONG_TOKEN, "hooks-secret-path-123", "hunter2-unregistered")
    record = logging.LogRecord("trainmon.x", logging.INFO, __file__, 1, "n=%d", (3,), None)
    assert RedactingFilter().filter(record) and JsonFormatter().format(record).count("n=3") == 1


def test_redact_helpers() -> None:
    assert redact_url("http://user:pw@host:9093/api") == "http://user:***@host:9093/api"
    assert redact_url("http://host:9093/api") == "http://host:9093/api"
    assert redact("postgresql+psycopg://USER@HOST/DB") == "postgresql+psycopg://USER@HOST/DB"  # no password
    assert redact("dbname=x password='a b' host=h") == "dbname=x password=*** host=h"
    assert redact(f"token {WRONG_TOKEN}") == "token tm_***"
