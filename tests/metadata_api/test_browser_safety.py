"""A web page the user opens must not be able to read or write a token-less API on loopback (issue 9, item 6):
JSON bodies only (415), no cross-site writes (403 unless a valid token), a Host allowlist against DNS rebinding
(400), security headers on every answer, artifacts never served as HTML/SVG, and /docs without a CDN.

The rules are middleware, the same on every database: these tests run on SQLite only.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import HostsNotConfigured, create_token
from trainmon.metadata_api.docs_ui import SWAGGER_DIR
from trainmon.metadata_api.security import CONTENT_SECURITY_POLICY, allowed_hosts
from trainmon.metadata_api.settings import Settings


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides conftest's SQLite + PostgreSQL pair): the rules do not touch the database."""
    return f"sqlite:///{tmp_path / 'trainmon-api.db'}"


RUN = {"experiment": "e", "run_id": "r"}
EVIL = {"Origin": "http://evil.example", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors"}
FORM_TYPES = ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x"]
POINTS = '{"batch_id": "b1", "points": [{"key": "loss", "step": 1, "value": 1.0}]}'


def stored_points(api: TestClient) -> int:
    return len(api.get("/api/metrics/1").json()["items"])


@pytest.mark.parametrize("content_type", [*FORM_TYPES, None])
def test_json_endpoints_refuse_other_content_types(api: TestClient, content_type: str | None) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    headers = {"Content-Type": content_type} if content_type else {}
    answer = api.post("/api/runs/r/metrics", content=POINTS, headers=headers)
    if content_type is None:  # httpx sends no Content-Type for raw content
        assert "content-type" not in answer.request.headers
    assert answer.status_code == 415, answer.text
    assert "application/json" in answer.json()["detail"]
    assert api.put("/api/runs/r/params", content='{"params": {}}', headers=headers).status_code == 415
    assert stored_points(api) == 0


def test_json_with_a_charset_and_bodyless_posts_are_accepted(api: TestClient) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    answer = api.post("/api/runs/r/metrics", content=POINTS,
                      headers={"Content-Type": "application/json; charset=utf-8"})
    assert answer.status_code == 200 and stored_points(api) == 1
    assert api.post("/api/runs/r/heartbeat").status_code == 204  # no body, no type: nothing to misread


def test_artifact_uploads_take_multipart_only(api: TestClient) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    answer = api.post("/api/runs/r/artifacts", json={"kind": "file", "name": "x"})
    assert answer.status_code == 415 and "multipart/form-data" in answer.json()["detail"]
    upload = api.post("/api/runs/r/artifacts", data={"kind": "file", "name": "x.bin"}, files={"file": b"1"})
    assert upload.status_code == 201


@pytest.mark.parametrize("content_type", FORM_TYPES)
def test_a_cross_site_form_post_is_refused(api: TestClient, content_type: str) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    for path, body in (("/api/runs/r/metrics", POINTS), ("/api/runs", '{"experiment": "e", "run_id": "x"}')):
        answer = api.post(path, content=body, headers={**EVIL, "Content-Type": content_type})
        assert answer.status_code == 403, answer.text
        assert "cross-site" in answer.json()["detail"]
    assert api.get("/api/runs/x").status_code == 404 and stored_points(api) == 0


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"},  # a browser without Sec-Fetch-* headers
    {"Origin": "null"},  # sandboxed frame, file:// page
    {"Sec-Fetch-Site": "same-site", "Origin": "http://other.testserver"},
    {"Sec-Fetch-Site": "cross-site"},
    {"Origin": "http://testserver:8080"},  # another port is another origin
])
def test_cross_site_json_writes_are_refused_too(api: TestClient, headers: dict[str, str]) -> None:
    answer = api.post("/api/runs", json=RUN, headers=headers)
    assert answer.status_code == 403 and "cross-site" in answer.json()["detail"]
    assert api.request("PUT", "/api/runs/r/params", json={"params": {}}, headers=headers).status_code == 403


@pytest.mark.parametrize("headers", [{}, {"Origin": "http://testserver", "Sec-Fetch-Site": "same-origin"},
                                     {"Sec-Fetch-Site": "none"}])
def test_sdk_style_and_same_origin_writes_work(api: TestClient, headers: dict[str, str]) -> None:
    assert api.post("/api/runs", json=RUN, headers=headers).status_code == 201
    assert api.post("/api/runs/r/metrics", content=POINTS,
                    headers={**headers, "Content-Type": "application/json"}).status_code == 200


def test_a_token_authenticated_cross_site_request_is_accepted(api: TestClient,
                                                              session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        token = create_token(session, "default", "write")
        session.commit()
    answer = api.post("/api/runs", json=RUN, headers={**EVIL, "Authorization": f"Bearer {token}"})
    assert answer.status_code == 201, answer.text
    forged = api.post("/api/runs", json={**RUN, "run_id": "r2"},
                      headers={**EVIL, "Authorization": "Bearer tm_made-up-token-value"})
    assert forged.status_code == 403


def test_reads_stay_open_to_same_origin_pages(api: TestClient) -> None:
    assert api.get("/api/experiments", headers=EVIL).status_code == 200  # the browser keeps the answer from it


def test_a_rebinding_host_header_is_refused(api: TestClient) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    for method, path, body in (("GET", "/api/runs/r", None), ("POST", "/api/runs", {**RUN, "run_id": "x"}),
                               ("GET", "/docs", None)):
        answer = api.request(method, path, json=body, headers={"Host": "evil.example:5000"})
        assert answer.status_code == 400, answer.text
        assert "evil.example" in answer.json()["detail"] and "ALLOWED_HOSTS" in answer.json()["detail"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    assert api.get("/api/runs/x").status_code == 404  # nothing was written


def test_default_hosts_are_the_bind_address_and_loopback(make_api: Callable[..., TestClient]) -> None:
    assert allowed_hosts(Settings(_env_file=None)) == ["127.0.0.1", "localhost", "::1", "[::1]"]
    assert allowed_hosts(Settings(_env_file=None, host="10.1.2.3"))[0] == "10.1.2.3"
    assert allowed_hosts(Settings(_env_file=None, host="::1"))[0] == "[::1]"
    api = make_api(allowed_hosts=None)
    for host in ("127.0.0.1:5000", "localhost:5000", "[::1]:5000", "localhost"):
        assert api.get("/healthz", headers={"Host": host}).status_code == 200, host
    for host in ("testserver", "evil.example", "127.0.0.1.nip.io:5000"):
        assert api.get("/healthz", headers={"Host": host}).status_code == 400, host


def test_a_wildcard_bind_needs_allowed_hosts(tmp_path: Path) -> None:
    with pytest.raises(HostsNotConfigured, match="ALLOWED_HOSTS"):
        allowed_hosts(Settings(_env_file=None, host="0.0.0.0"))
    assert allowed_hosts(Settings(_env_file=None, host="0.0.0.0", allowed_hosts="*")) == ["*"]
    assert allowed_hosts(Settings(_env_file=None, host="::", allowed_hosts="a.example, *.b.example")) == [
        "a.example", "*.b.example"]
    assert allowed_hosts(Settings(_env_file=None, host="::", allowed_hosts="fd00::5")) == ["fd00::5", "[fd00::5]"]
    with pytest.raises(ValueError, match="ALLOWED_HOSTS"):
        Settings(_env_file=None, allowed_hosts="evil*.example")
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'a.db'}", "PATH": "/usr/bin:/bin"}
    started = subprocess.run([sys.executable, "-m", "trainmon.metadata_api", "--host", "0.0.0.0", "--insecure"],
                             capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert started.returncode == 2 and "ALLOWED_HOSTS" in started.stderr and "Traceback" not in started.stderr


def test_any_host_when_allowed_explicitly(make_api: Callable[..., TestClient]) -> None:
    assert make_api(allowed_hosts="*").get("/healthz", headers={"Host": "anything.example"}).status_code == 200


def test_every_answer_carries_the_security_headers(api: TestClient) -> None:
    answers = [api.get("/healthz"), api.get("/metrics"), api.get("/api/runs/nope"), api.get("/openapi.json"),
               api.post("/api/runs", content="x", headers={"Content-Type": "text/plain"}),
               api.post("/api/runs", json=RUN, headers=EVIL), api.get("/", headers={"Host": "evil.example"}),
               api.post("/api/runs", json={})]
    assert [a.status_code for a in answers] == [200, 200, 404, 200, 415, 403, 400, 422]
    for answer in answers:
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert answer.headers["x-frame-options"] == "DENY"
        assert answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY and "default-src 'self'" in CONTENT_SECURITY_POLICY


PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 32
FILES = [("page.html", b"<html><script>alert(document.domain)</script></html>", "text/html",
          "application/octet-stream", "attachment"),
         ("pic.svg", b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>', "image/svg+xml",
          "application/octet-stream", "attachment"),
         ("fake.png", b"<script>alert(1)</script>", "image/png", "application/octet-stream", "attachment"),
         ("real.png", PNG, "text/html", "image/png", "inline"),
         ("a.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 16, None, "image/jpeg", "inline"),
         ("a.gif", b"GIF89a" + b"\0" * 16, None, "image/gif", "inline"),
         ("a.webp", b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 16, None, "image/webp", "inline")]


@pytest.mark.parametrize(("name", "content", "declared", "served", "disposition"), FILES)
def test_artifacts_are_served_as_images_or_attachments(api: TestClient, name: str, content: bytes,
                                                       declared: str | None, served: str, disposition: str) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    upload = api.post("/api/runs/r/artifacts", data={"kind": "file", "name": name},
                      files={"file": (name, content, declared or "application/octet-stream")})
    assert upload.status_code == 201, upload.text
    download = api.get(f"/api/runs/r/artifacts/{upload.json()['id']}/file")
    assert download.status_code == 200 and download.content == content
    assert download.headers["content-type"] == served
    assert download.headers["content-disposition"].startswith(disposition)
    assert download.headers["x-content-type-options"] == "nosniff"


def test_docs_are_served_from_the_vendored_swagger_ui(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text
    sources = re.findall(r'(?:src|href)="(/static/[^"]+)"', page.text)
    assert sorted(sources) == ["/static/swagger/swagger-ui-bundle.js", "/static/swagger/swagger-ui.css"]
    for source, media_type in zip(sorted(sources), ("text/javascript", "text/css"), strict=True):
        asset = api.get(source)
        assert asset.status_code == 200 and asset.headers["content-type"].startswith(media_type)
        assert asset.content == (SWAGGER_DIR / source.rsplit("/", 1)[1]).read_bytes()
    policy = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in policy and "'sha256-" in policy and "unsafe-eval" not in policy
    assert api.get("/redoc").status_code == 404
    assert (SWAGGER_DIR / "LICENSE").is_file() and "swagger-ui-dist" in (SWAGGER_DIR / "README.md").read_text()
