"""`exporter_url` becomes a Prometheus scrape target through /api/sd (issue 9, item 12): only http(s) URLs without
credentials, no link-local or cloud metadata address (422 naming the field); EXPORTER_URL_ALLOW opens networks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from trainmon.metadata_api.settings import Settings

REFUSED = ["http://169.254.169.254/latest/meta-data/", "http://169.254.169.254:80/metrics",
           "http://[fd00:ec2::254]/latest", "http://metadata.google.internal/computeMetadata/v1/",
           "http://METADATA.google.internal./x", "http://100.100.100.200/latest", "http://169.254.10.20:9441/metrics",
           "http://[fe80::1]:9441/metrics", "http://[::ffff:169.254.169.254]/", "http://2852039166/",
           "http://0xa9.0xfe.0xa9.0xfe/", "http://user:secret@gpu-node-1:9441/metrics", "http://token@gpu-1:9441/",
           "ftp://gpu-node-1/metrics", "file:///etc/passwd", "gopher://gpu-node-1:70/", "http://gpu-1:99999/"]
ACCEPTED = ["http://gpu-node-1:9441/metrics", "https://gpu-node-1.example.org/metrics", "http://10.0.0.5:9441",
            "http://127.0.0.1:9441/metrics", "http://[2001:db8::1]:9441/metrics", "http://172.16.0.3:9442/m"]


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides conftest's SQLite + PostgreSQL pair): the check is on the request body."""
    return f"sqlite:///{tmp_path / 'trainmon-api.db'}"


def register(api: TestClient, run_id: str, url: str):  # noqa: ANN201 - an httpx Response
    return api.post("/api/runs", json={"experiment": "e", "run_id": run_id, "exporter_url": url})


@pytest.mark.parametrize("url", REFUSED)
def test_unsafe_exporter_urls_are_refused(api: TestClient, url: str) -> None:
    answer = register(api, "r", url)
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["detail"]
    assert error["loc"] == ["body", "exporter_url"]
    assert api.get("/api/runs/r").status_code == 404 and api.get("/api/sd").json() == []


@pytest.mark.parametrize("url", ACCEPTED)
def test_ordinary_exporter_urls_are_accepted(api: TestClient, url: str) -> None:
    assert register(api, "r", url).status_code == 201
    [group] = api.get("/api/sd").json()
    assert group["labels"]["run_id"] == "r"


def test_the_reason_is_named(api: TestClient) -> None:
    assert "metadata" in register(api, "r", "http://169.254.169.254/").json()["detail"][0]["msg"]
    assert "link-local" in register(api, "r", "http://[fe80::1]:9/").json()["detail"][0]["msg"]
    assert "credentials" in register(api, "r", "http://u:p@h:9/").json()["detail"][0]["msg"]


def test_allowed_networks_and_what_sd_leaves_out(make_api: Callable[..., TestClient]) -> None:
    allowing = make_api(exporter_url_allow="169.254.0.0/16, fe80::/10")
    assert register(allowing, "link", "http://169.254.10.20:9441/metrics").status_code == 201
    assert register(allowing, "v6", "http://[fe80::2]:9441/metrics").status_code == 201
    assert register(allowing, "meta", "http://169.254.169.254/").status_code == 422  # a range never allows these
    assert {g["labels"]["run_id"] for g in allowing.get("/api/sd").json()} == {"link", "v6"}
    exact = make_api(exporter_url_allow="169.254.169.254/32")
    assert register(exact, "meta", "http://169.254.169.254:9441/metrics").status_code == 201
    strict = make_api()  # the same database, the default policy: stored endpoints it refuses are not listed
    assert strict.get("/api/sd").json() == []
    assert strict.get("/api/runs/link").json()["exporter_url"] == "http://169.254.10.20:9441/metrics"


def test_a_bad_allow_list_is_a_settings_error() -> None:
    with pytest.raises(ValidationError, match="EXPORTER_URL_ALLOW"):
        Settings(_env_file=None, exporter_url_allow="169.254.0.0/16, not-a-network")
