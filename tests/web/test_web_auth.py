"""The dashboard with API tokens configured: a page asks for a token once and keeps it in an HttpOnly,
SameSite=Strict cookie; no token, no page and no data; a read token sees its project only and cannot write; a
write token adds notes from the page, and a write by cookie without the CSRF header is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.api import run_api
from support.procs import require_binary
from trainmon.metadata_api import migrations
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.db import make_engine, write_sessions

TOKENS: dict[str, str] = {}


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API with a read and a write token of project `vision` and a write token of project `other`, each with
    a run."""
    require_binary("chromium", "/usr/bin/chromium")
    workdir: Path = tmp_path_factory.mktemp("secured")
    database = f"sqlite:///{workdir / 'trainmon.db'}"
    engine = make_engine(database)
    migrations.upgrade(engine)
    with write_sessions(engine)() as session:
        for name, project, scope in (("read", "vision", "read"), ("write", "vision", "write"),
                                     ("other", "other", "write")):
            TOKENS[name] = create_token(session, project, scope)
        session.commit()
    engine.dispose()
    with run_api(database, workdir) as url:
        for token, project, run_id in ((TOKENS["write"], "vision", "seen"), (TOKENS["other"], "other", "hidden")):
            headers = {"Authorization": f"Bearer {token}"}
            requests.post(f"{url}/api/runs", json={"experiment": "e", "project": project, "run_id": run_id},
                          headers=headers, timeout=10).raise_for_status()
            requests.post(f"{url}/api/runs/{run_id}/metrics", headers=headers, timeout=10, json={
                "batch_id": "1", "points": [{"key": "loss", "step": s, "value": 1 / (s + 1)} for s in range(10)]},
                          ).raise_for_status()
        yield url


def sign_in(page, url: str, token: str, then: str = "/") -> None:  # noqa: ANN001
    page.goto(f"{url}{then}")
    page.wait_for_url("**/login?next=*")
    page.fill("#token", token)
    page.click("#login-form button")
    page.wait_for_url(f"{url}{then}")


def test_no_token_no_page_and_no_data(secured: str, page) -> None:  # noqa: ANN001
    assert requests.get(f"{secured}/api/runs/seen", timeout=10).status_code == 401
    assert requests.get(f"{secured}/api/runs/seen/events", timeout=10).status_code == 401
    answer = requests.get(f"{secured}/runs/seen", allow_redirects=False, timeout=10)
    assert answer.status_code == 303 and answer.headers["location"] == "/login?next=%2Fruns%2Fseen"
    page.goto(f"{secured}/")
    assert page.url.endswith("/login?next=%2F")
    page.fill("#token", "tm_not-a-token-at-all")
    page.click("#login-form button")
    page.wait_for_selector("#login-error:not([hidden])")
    assert "unknown or revoked" in page.locator("#login-error").inner_text()
    assert page.context.cookies() == [] or all(c["name"] != "trainmon_token" for c in page.context.cookies())


def test_a_read_token_sees_its_project_and_cannot_write(secured: str, page) -> None:  # noqa: ANN001
    sign_in(page, secured, TOKENS["read"])
    cookie = next(c for c in page.context.cookies() if c["name"] == "trainmon_token")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"] == TOKENS["read"]
    assert page.evaluate("() => document.cookie").find("trainmon_token") == -1  # no script can read it
    rows = page.eval_on_selector_all("#runs-table tbody tr[data-run-id]", "rows => rows.map(r => r.dataset.runId)")
    assert rows == ["seen"]  # the other project's run is not shown
    page.goto(f"{secured}/runs/seen")
    page.wait_for_function("() => window.__trainmon.charts.loss && window.__trainmon.charts.loss.paints > 0")
    assert page.locator("#note-form").count() == 0 and "write token" in page.locator("#tags-notes").inner_text()
    status = page.evaluate("""async () => (await fetch('/api/runs/seen/notes', {method: 'POST',
        headers: {'Content-Type': 'application/json', 'X-CSRF-Token': decodeURIComponent(
            document.cookie.split('; ').find(c => c.startsWith('trainmon_csrf=')).split('=')[1])},
        body: JSON.stringify({text: 'x'})})).status""")
    assert status == 403
    assert page.goto(f"{secured}/runs/hidden").status == 404


def test_a_write_token_writes_from_the_page_with_its_csrf_token(secured: str, page) -> None:  # noqa: ANN001
    sign_in(page, secured, TOKENS["write"], then="/runs/seen")
    page.fill("#note-text", "looks good")
    page.click("#note-form button")
    page.wait_for_selector("#notes li:has-text('looks good')")
    forged = page.evaluate("""async () => (await fetch('/api/runs/seen/notes', {method: 'POST',
        headers: {'Content-Type': 'application/json'}, body: JSON.stringify({text: 'no csrf header'})})).status""")
    assert forged == 403  # the cookie alone does not authorise a write
    page.click("#sign-out")
    page.wait_for_url("**/login")
    assert all(c["name"] != "trainmon_token" for c in page.context.cookies())
    page.goto(f"{secured}/runs/seen")
    assert "/login" in page.url
