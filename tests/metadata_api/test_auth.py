"""Auth: open while no token exists; then 401 without/with an unknown token, 403 for another project's token or a
read token writing. And the bind rule: no token -> loopback only unless --insecure."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import BindNotAllowed, check_bind_allowed, create_token, hash_token
from trainmon.metadata_api.models import ApiToken


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(api: TestClient, session_factory: sessionmaker[Session]) -> dict[str, str]:
    """Runs `a1` (project alpha) and `b1` (project beta), then tokens: alpha write/read, beta write."""
    for project, run_id in (("alpha", "a1"), ("beta", "b1")):
        assert api.post("/api/runs", json={"experiment": "e", "project": project, "run_id": run_id}).status_code == 201
    with session_factory() as session:
        made = {"alpha-write": create_token(session, "alpha", "write"),
                "alpha-read": create_token(session, "alpha", "read"),
                "beta-write": create_token(session, "beta", "write")}
        session.commit()
    return made


WRITES = [("POST", "/api/runs/a1/metrics", {"batch_id": "b", "points": [{"key": "k", "step": 1, "value": 1.0}]}),
          ("POST", "/api/runs/a1/heartbeat", {}),
          ("POST", "/api/runs/a1/tags", {"tags": {"x": "y"}}),
          ("PUT", "/api/runs/a1/params", {"params": {"lr": 1}}),
          ("POST", "/api/runs", {"experiment": "e", "project": "alpha", "run_id": "a2"})]
READS = ["/api/runs/a1", "/api/experiments/1", "/api/metrics/1"]


def test_without_tokens_the_api_is_open(api: TestClient) -> None:
    assert api.post("/api/runs", json={"experiment": "e", "run_id": "r"}).status_code == 201
    assert api.get("/api/runs/r").status_code == 200


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_write_matrix(api: TestClient, tokens: dict[str, str], method: str, path: str, body: dict) -> None:
    assert api.request(method, path, json=body).status_code == 401
    assert api.request(method, path, json=body, headers=bearer("tm_not-a-token")).status_code == 401
    assert api.request(method, path, json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    other = api.request(method, path, json=body, headers=bearer(tokens["beta-write"]))
    if path.startswith("/api/runs/"):  # another project's run id is no run of this token's project
        assert other.status_code == 404 and other.json()["detail"] == "run_id: no run 'a1'"
    else:
        assert other.status_code == 403 and "project" in other.json()["detail"]
    read_only = api.request(method, path, json=body, headers=bearer(tokens["alpha-read"]))
    assert read_only.status_code == 403
    assert api.request(method, path, json=body, headers=bearer(tokens["alpha-write"])).status_code in (200, 201, 204)


@pytest.mark.parametrize("path", READS)
def test_read_matrix(api: TestClient, tokens: dict[str, str], path: str) -> None:
    assert api.get(path).status_code == 401
    assert api.get(path, headers=bearer(tokens["beta-write"])).status_code == (404 if "/runs/" in path else 403)
    assert api.get(path, headers=bearer(tokens["alpha-read"])).status_code == 200
    assert api.get(path, headers=bearer(tokens["alpha-write"])).status_code == 200


def test_lists_show_only_the_tokens_project(api: TestClient, tokens: dict[str, str]) -> None:
    assert [e["project"] for e in api.get("/api/experiments", headers=bearer(tokens["alpha-read"])).json()["items"]
            ] == ["alpha"]
    assert api.get("/api/experiments").status_code == 401


def test_a_token_without_project_in_the_body_writes_to_its_own(api: TestClient, tokens: dict[str, str]) -> None:
    created = api.post("/api/runs", json={"experiment": "e2"}, headers=bearer(tokens["beta-write"]))
    assert created.status_code == 201 and created.json()["project"] == "beta"


def test_health_and_metrics_need_no_token(api: TestClient, tokens: dict[str, str]) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert api.get(path).status_code == 200


def test_tokens_are_stored_hashed(api: TestClient, tokens: dict[str, str], session_factory: sessionmaker[Session]
                                  ) -> None:
    with session_factory() as session:
        stored = set(session.scalars(select(ApiToken.token_hash)))
    assert stored == {hash_token(token) for token in tokens.values()}
    assert not stored & set(tokens.values())


@pytest.mark.parametrize(("host", "tokens_exist", "insecure", "allowed"), [
    ("127.0.0.1", False, False, True), ("::1", False, False, True), ("localhost", False, False, True),
    ("127.0.0.2", False, False, True), ("0.0.0.0", False, False, False), ("10.1.2.3", False, False, False),
    ("::", False, False, False), ("0.0.0.0", True, False, True), ("0.0.0.0", False, True, True)])
def test_bind_rule(host: str, tokens_exist: bool, insecure: bool, allowed: bool) -> None:
    if allowed:
        check_bind_allowed(host, tokens_exist, insecure)
    else:
        with pytest.raises(BindNotAllowed, match="--insecure"):
            check_bind_allowed(host, tokens_exist, insecure)


def test_server_refuses_a_public_bind_without_tokens(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'api.db'}", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-m", "trainmon.metadata_api", "--host", "0.0.0.0", "--port", "1"],
                            capture_output=True, text=True, timeout=60, env=env, cwd=tmp_path)
    assert result.returncode == 2
    assert "no API token exists" in result.stderr and "--insecure" in result.stderr
