"""The live API against its own OpenAPI document (schemathesis): on SQLite and on PostgreSQL, once open (no token
exists) and once with a write token, every generated request must answer without a server error, with a status
code, content type and body the document states for it.

Bounded and reproducible: `--generation-deterministic` (the same requests on every run, so a failure reproduces),
MAX_EXAMPLES per operation and phase, hypothesis' deadline off (schemathesis' default) and its health checks off
(a slow, loaded CI machine is no failure). At least MIN_REQUESTS generated requests per backend. The rate limits
are off for the fuzzed server (`AUTH_FAILURES_PER_MINUTE=0`, `WRITES_PER_MINUTE=0`): they have their own tests,
and a fuzzer answered 429 tests nothing behind them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from support.api import run_api
from support.procs import fresh_postgres_database
from trainmon.metadata_api import auth
from trainmon.metadata_api.db import make_engine, write_sessions

MAX_EXAMPLES = 3
MIN_REQUESTS = 1000
#: open: every boundary and type of every parameter (coverage: ~1,700 requests), random requests (fuzzing) and
#: chains along the document's links (stateful); with a token, the random and chained ones again (auth paths)
PHASES = {"open": "coverage,fuzzing,stateful", "token": "fuzzing,stateful"}
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
#: operations that cannot be fuzzed by nature: a server-sent event stream stays open for STREAM_SECONDS (25 s) per
#: request by design (`routes/events.py`). (`/metrics`, Prometheus' text format, is not in the document at all.)
EXCLUDED_PATHS = r"/events$"


@pytest.fixture(params=["sqlite", "postgres"])
def fuzz_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fuzz.db'}"
        return
    with fresh_postgres_database(request.getfixturevalue("postgres_url"), prefix="fuzz") as url:
        yield url


def create_write_token(database_url: str) -> str:
    engine = make_engine(database_url)
    try:
        with write_sessions(engine)() as session:
            token = auth.create_token(session, "fuzzing", "write", "schemathesis")
            session.commit()
    finally:
        engine.dispose()
    return token


def schemathesis(base_url: str, report: Path, phases: str, token: str | None = None) -> dict[str, Any]:
    """One bounded schemathesis run against `base_url`; its JSON report."""
    command = [sys.executable, "-m", "schemathesis.cli", "run", f"{base_url}/openapi.json", "--checks", CHECKS,
               "--phases", phases,
               "--max-examples", str(MAX_EXAMPLES), "--generation-deterministic", "--suppress-health-check", "all",
               "--exclude-path-regex", EXCLUDED_PATHS, "--request-timeout", "30", "--no-color",
               "--report", "json", "--report-json-path", str(report)]
    if token is not None:
        command += ["--header", f"Authorization: Bearer {token}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, cwd=report.parent)
    assert report.exists(), f"schemathesis wrote no report:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    answer: dict[str, Any] = json.loads(report.read_text())
    answer["output"] = result.stdout
    return answer


def test_the_api_answers_every_generated_request_as_documented(fuzz_database: str, tmp_path: Path) -> None:
    generated = 0
    with run_api(fuzz_database, tmp_path, AUTH_FAILURES_PER_MINUTE="0", WRITES_PER_MINUTE="0") as base_url:
        for mode in ("open", "token"):
            token = create_write_token(fuzz_database) if mode == "token" else None
            report = schemathesis(base_url, tmp_path / f"schemathesis-{mode}.json", PHASES[mode], token)
            summary = {key: report.get(key) for key in ("test_cases", "failures", "errors", "operations")}
            assert report["failures"] == [] and report["errors"] == [], (
                f"{mode}: {json.dumps(summary, indent=1)}\n{report['output'][-12000:]}")
            assert report["operations"]["tested"] == report["operations"]["selected"] > 20, summary
            generated += report["test_cases"]["generated"]
            print(f"schemathesis {mode}: {report['test_cases']['generated']} requests, "  # shown with -s
                  f"{report['operations']['tested']} operations, {report['running_time']:.0f} s")
    assert generated >= MIN_REQUESTS
