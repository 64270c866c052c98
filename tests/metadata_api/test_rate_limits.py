"""Rate limits (issue 9, item 10): failed authentications per client address and writes per token answer 429
with Retry-After; the defaults leave a 64-rank job alone. SQLite only: the limits are middleware."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.client.shipper import Shipper
from trainmon.common.settings import SETTINGS
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.ratelimit import RateLimitMiddleware, TokenBuckets
from trainmon.metadata_api.settings import Settings

POINTS = {"batch_id": "b", "points": [{"key": "loss", "step": 1, "value": 1.0}]}


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    """SQLite only (overrides conftest's SQLite + PostgreSQL pair)."""
    return f"sqlite:///{tmp_path / 'trainmon-api.db'}"


@pytest.fixture
def client_at(api_settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """`client_at(address, **settings)`: a client whose requests come from `address` (one app per settings)."""
    apps: dict[tuple, Any] = {}
    with contextlib.ExitStack() as stack:

        def make(address: str, **overrides: Any) -> TestClient:
            key = tuple(sorted(overrides.items()))
            if key not in apps:
                apps[key] = create_app(api_settings.model_copy(update=overrides))
            return stack.enter_context(TestClient(apps[key], client=(address, 40000)))

        yield make


@pytest.fixture
def token(api: TestClient, session_factory: sessionmaker[Session]) -> str:
    with session_factory() as session:
        made = create_token(session, "default", "write")
        session.commit()
    return made


def bearer(value: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {value}"}


def test_a_thousand_wrong_tokens_are_throttled(client_at: Callable[..., TestClient], token: str) -> None:
    attacker = client_at("203.0.113.7")
    codes = [attacker.get("/api/experiments", headers=bearer(f"tm_guess-{n:04d}")).status_code for n in range(1000)]
    assert codes[:20] == [401] * 20
    assert codes.count(429) >= 970, codes.count(429)
    refused = attacker.get("/api/experiments", headers=bearer(token))
    assert refused.status_code == 429 and "failed authentications" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert attacker.get("/healthz").status_code == 200  # health checks are never limited
    neighbour = client_at("198.51.100.2")  # another address has its own budget (same app)
    assert neighbour.get("/api/experiments", headers=bearer(token)).status_code == 200


def test_the_failure_budget_refills(client_at: Callable[..., TestClient], token: str) -> None:
    client = client_at("203.0.113.8", auth_failures_per_minute=600)  # 10 a second
    now = [1000.0]  # the limits' clock stands still unless the test moves it
    client.app.state.rate_limits.failures.clock = lambda: now[0]
    codes = [client.get("/api/experiments").status_code for _ in range(700)]
    assert codes == [401] * 600 + [429] * 100
    retry = client.get("/api/experiments")
    assert retry.status_code == 429 and retry.headers["Retry-After"] == "1"
    now[0] += 0.25  # 2.5 units back
    assert client.get("/api/experiments", headers=bearer(token)).status_code == 200


def test_writes_are_limited_per_token(client_at: Callable[..., TestClient], token: str,
                                      session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        other = create_token(session, "default", "write")
        session.commit()
    client = client_at("192.0.2.1", writes_per_minute=5)
    assert client.post("/api/runs", json={"experiment": "e", "run_id": "r"}, headers=bearer(token)).status_code == 201
    codes = [client.post("/api/runs/r/heartbeat", headers=bearer(token)).status_code for _ in range(6)]
    assert codes == [204] * 4 + [429] * 2
    limited = client.post("/api/runs/r/metrics", json=POINTS, headers=bearer(token))
    assert limited.status_code == 429 and "WRITES_PER_MINUTE" in limited.json()["detail"]
    assert 1 <= int(limited.headers["Retry-After"]) <= 12
    assert client.get("/api/runs/r", headers=bearer(token)).status_code == 200  # reads are not writes
    assert client.post("/api/runs/r/metrics", json=POINTS, headers=bearer(other)).status_code == 200


def test_zero_turns_the_limits_off(client_at: Callable[..., TestClient], token: str) -> None:
    client = client_at("192.0.2.2", auth_failures_per_minute=0, writes_per_minute=0)
    assert {client.get("/api/experiments").status_code for _ in range(100)} == {401}
    assert client.post("/api/runs", json={"experiment": "e", "run_id": "r"}, headers=bearer(token)).status_code == 201
    assert {client.post("/api/runs/r/heartbeat", headers=bearer(token)).status_code for _ in range(100)} == {204}


def test_the_defaults_leave_a_64_rank_job_alone() -> None:
    """Ten minutes of 64 ranks sharing one token at the SDK's pace: a metric batch and a log batch every batch
    interval and a heartbeat every heartbeat interval each, plus registration at start; nothing answers 429."""
    batch_interval = inspect.signature(Shipper.__init__).parameters["batch_interval"].default
    heartbeat_interval = SETTINGS["heartbeat_interval"].default
    settings = Settings(_env_file=None)
    now = [0.0]
    answered: list[int] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    limiter = RateLimitMiddleware(app, settings.auth_failures_per_minute, settings.writes_per_minute,
                                  clock=lambda: now[0])

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answered.append(message["status"])

    async def post(path: str) -> None:
        scope = {"type": "http", "method": "POST", "path": path, "client": ("10.0.0.9", 1),
                 "headers": [(b"authorization", b"Bearer tm_shared-token")]}
        await limiter(scope, None, send)

    async def job() -> None:
        for _ in range(64):
            await post("/api/runs")
        step = 0.5
        for tick in range(int(600 / step)):
            now[0] = tick * step
            for _rank in range(64):
                if (now[0] / batch_interval).is_integer():
                    await post("/api/runs/r/metrics")
                    await post("/api/runs/r/logs")
                if (now[0] / heartbeat_interval).is_integer():
                    await post("/api/runs/r/heartbeat")

    asyncio.run(job())
    assert len(answered) > 64 * 600 * 2 and set(answered) == {200}


def test_buckets_forget_full_entries_beyond_their_cap() -> None:
    now = [0.0]
    buckets = TokenBuckets(2, clock=lambda: now[0], max_keys=100)
    for n in range(100):
        buckets.spend(f"k{n}")
    now[0] = 60.0  # all refilled
    buckets.spend("new")
    assert len(buckets._buckets) <= 100
    assert buckets.take("x") == 0 and buckets.take("x") == 0 and buckets.take("x") == pytest.approx(30.0)
