"""The per-request path made cheap (issue 13) without giving anything up: one guard layer instead of eight, the
caller resolved once per request, tokens looked up on every request (a token created or revoked by another process
counts from the next request on), sessions that always hand their connection back, request metrics for refusals.
The rules themselves are tested where they are described (test_browser_safety, test_rate_limits, test_auth,
test_ingest); these tests pin what the cheaper path must keep."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from typing import Annotated, Any

import pytest
from fastapi import Header, Request
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from sqlalchemy import event, update
from sqlalchemy.orm import Session, sessionmaker
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.routing import Router
from trainmon.metadata_api import auth, routing, transactions
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.auth import create_token, hash_token
from trainmon.metadata_api.models import ApiToken
from trainmon.metadata_api.routing import DirectRoute
from trainmon.metadata_api.security import ContentTypes, HostAllowlist
from trainmon.metadata_api.settings import Settings

RUN = {"experiment": "e", "run_id": "r"}
POINTS = {"batch_id": "b1", "points": [{"key": "loss", "step": 1, "value": 1.0}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_token_created_elsewhere_closes_the_open_api_at_the_next_request(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201  # open: no token exists
    assert api.get("/api/runs/r").status_code == 200
    with session_factory() as session:  # another process (`trainmon token create`) adds one
        token = create_token(session, "default", "write")
        session.commit()
    assert api.get("/api/runs/r").status_code == 401
    assert api.post("/api/runs/r/metrics", json=POINTS).status_code == 401
    assert api.post("/api/runs/r/metrics", json=POINTS, headers=bearer(token)).status_code == 200


def test_a_token_revoked_elsewhere_stops_working_at_the_next_request(
        api: TestClient, session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        token, other = create_token(session, "default", "write"), create_token(session, "default", "read")
        session.commit()
    assert api.post("/api/runs", json=RUN, headers=bearer(token)).status_code == 201
    assert api.post("/api/runs/r/metrics", json=POINTS, headers=bearer(token)).status_code == 200
    with session_factory() as session:
        session.execute(update(ApiToken).where(ApiToken.token_hash == hash_token(token))
                        .values(revoked_at=datetime.now(timezone.utc)))
        session.commit()
    assert api.post("/api/runs/r/metrics", json=POINTS, headers=bearer(token)).status_code == 401
    assert api.get("/api/runs/r", headers=bearer(token)).status_code == 401
    assert api.get("/api/runs/r", headers=bearer(other)).status_code == 200  # a token still exists: closed
    assert api.get("/api/runs/r").status_code == 401


def test_a_request_resolves_its_caller_once(api: TestClient, session_factory: sessionmaker[Session],
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with session_factory() as session:
        token = create_token(session, "default", "write")
        session.commit()
    assert api.post("/api/runs", json=RUN, headers=bearer(token)).status_code == 201
    lookups: list[str] = []
    resolve = auth.resolve_token
    monkeypatch.setattr(auth, "resolve_token", lambda session, value: lookups.append(value) or resolve(session, value))
    assert api.post("/api/runs/r/metrics", json=POINTS, headers=bearer(token)).status_code == 200
    assert api.get("/api/runs/r", headers=bearer(token)).status_code == 200
    assert api.get("/api/experiments/1", headers=bearer(token)).status_code == 200
    assert lookups == [token, token, token]


def test_without_a_valid_token_nothing_tells_what_exists(api: TestClient, session_factory: sessionmaker[Session]
                                                          ) -> None:
    assert api.post("/api/runs", json=RUN).status_code == 201
    with session_factory() as session:
        create_token(session, "default", "write")
        session.commit()
    for path in ("/api/runs/r", "/api/runs/nobody", "/api/experiments/1", "/api/experiments/999"):
        assert api.get(path).status_code == 401, path
        assert api.get(path, headers=bearer("tm_not-a-token")).status_code == 401, path
    for path in ("/api/runs/r/metrics", "/api/runs/nobody/metrics"):
        assert api.post(path, json=POINTS).status_code == 401, path


def test_every_request_hands_its_connection_back(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    pool = api.app.state.engine.pool  # type: ignore[attr-defined]
    answers = [api.post("/api/runs", json=RUN).status_code,  # committed
               api.post("/api/runs/r/metrics", json=POINTS).status_code,
               api.post("/api/runs/r/metrics", json=POINTS).status_code,  # a replay: rolled back by the route
               api.post("/api/runs/nobody/metrics", json=POINTS).status_code,  # 404 raised mid-transaction
               api.get("/api/runs/r").status_code,  # a read transaction, never committed
               api.get("/healthz").status_code]  # no session used at all
    assert answers == [201, 200, 200, 404, 200, 200]
    assert pool.checkedout() == 0
    with session_factory() as session:
        create_token(session, "default", "write")
        session.commit()
    assert api.post("/api/runs/r/metrics", json=POINTS).status_code == 401  # refused by the caller check
    assert pool.checkedout() == 0


def request_counts(api: TestClient) -> dict[tuple[str, str, str], float]:
    text = api.get("/metrics").text
    pattern = r'^trainmon_api_request_duration_seconds_count\{method="(\w+)",route="([^"]+)",status="(\d+)"\} (\S+)$'
    return {(m, r, s): float(v) for m, r, s, v in re.findall(pattern, text, re.M)}


def test_refusals_and_answers_are_counted_by_route_and_status(make_api: Callable[..., TestClient]) -> None:
    api = make_api(max_body_bytes=256, writes_per_minute=3)
    assert api.post("/api/runs", json=RUN).status_code == 201
    assert api.post("/api/runs/r/metrics", json=POINTS).status_code == 200
    assert api.get("/healthz", headers={"Host": "evil.example"}).status_code == 400
    assert api.post("/api/runs", json=RUN, headers={"Origin": "http://evil.example"}).status_code == 403
    assert api.post("/api/runs/r/metrics", content="x", headers={"Content-Type": "text/plain"}).status_code == 415
    assert api.post("/api/runs/r/metrics", content="x" * 300,
                    headers={"Content-Type": "application/json"}).status_code == 413
    assert api.post("/api/runs/r/heartbeat").status_code == 429  # the third write took the last unit
    counts = request_counts(api)
    assert counts[("POST", "/api/runs", "201")] == 1
    assert counts[("POST", "/api/runs/{run_id}/metrics", "200")] == 1
    for status in ("400", "403", "415", "413", "429"):
        assert counts[("POST" if status != "400" else "GET", "unmatched", status)] == 1, status


@pytest.mark.parametrize("allowed", [["127.0.0.1", "localhost", "::1", "[::1]"], ["*.example.org", "api.test"],
                                     ["*"]])
def test_host_decisions_are_starlettes(allowed: list[str]) -> None:
    """The remembered decisions are TrustedHostMiddleware's own, for every kind of Host header."""
    hosts = HostAllowlist(_app_ok, allowed)
    checked = TrustedHostMiddleware(_app_ok, allowed_hosts=allowed, www_redirect=False)
    cases = [None, "", "127.0.0.1", "127.0.0.1:5000", "LOCALHOST:80", "[::1]:5000", "::1", "[::2]", "[zz]:1",
             "api.test", "www.api.test", "x.example.org", "example.org", "a.b.example.org:443", "evil.example",
             "127.0.0.1.nip.io", "host:notaport", "a b", "localhost:5000:1"]

    async def starlette_says(host: str | None) -> bool:
        statuses: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        scope = {"type": "http", "method": "GET", "path": "/", "query_string": b"",
                 "headers": [] if host is None else [(b"host", host.encode("latin-1"))]}
        await checked(scope, _nothing, send)
        return statuses == [200]

    async def compare() -> None:
        for _ in range(2):  # the second time from the remembered table
            for host in cases:
                assert await hosts.allows(host) == await starlette_says(host), host

    asyncio.run(compare())


def test_the_remembered_hosts_are_bounded() -> None:
    hosts = HostAllowlist(_app_ok, ["127.0.0.1"])

    async def many() -> None:
        for index in range(HostAllowlist.MAX_REMEMBERED * 3):
            assert not await hosts.allows(f"rebinding-{index}.evil.example")
        assert await hosts.allows("127.0.0.1:5000")

    asyncio.run(many())
    assert len(hosts._known) <= HostAllowlist.MAX_REMEMBERED


def test_body_types_are_read_once_and_remembered_per_path(api: TestClient) -> None:
    types = ContentTypes()
    app = api.app
    assert types.expected(app, "POST", "/api/runs/a/metrics") == ("application/json",)
    assert types.expected(app, "POST", "/api/runs/a/artifacts") == ("multipart/form-data",)
    assert types.expected(app, "POST", "/api/not-a-route") == ("application/json",)  # none declared: JSON
    json_only = {"content-type": "text/plain", "content-length": "1"}
    assert "application/json" in (types.refusal(app, "POST", "/api/runs/a/metrics", json_only) or "")
    assert types.refusal(app, "POST", "/api/runs/a/metrics", {"content-type": "application/json; charset=utf-8"}) \
        is None
    assert types.refusal(app, "POST", "/api/runs/a/heartbeat", {}) is None  # no body, no type
    for index in range(ContentTypes.MAX_REMEMBERED * 2):
        types.expected(app, "POST", f"/api/runs/run-{index}/metrics")
    assert len(types._known) <= ContentTypes.MAX_REMEMBERED


async def _app_ok(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b""})


async def _nothing() -> dict[str, Any]:
    return {"type": "http.disconnect"}


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_a_batch_waits_for_a_busy_sqlite_writer_in_a_worker_thread_never_on_the_event_loop(
        api: TestClient, api_settings: Settings) -> None:
    """Small batches are stored on the event loop only while SQLite's write lock is free; held by another
    connection, the batch waits in a worker thread and the loop keeps answering."""
    assert api.post("/api/runs", json=RUN).status_code == 201
    holder = sqlite3.connect(api_settings.database_url.removeprefix("sqlite:///"), isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(api.post, "/api/runs/r/metrics", json=POINTS)
            time.sleep(1.0)
            assert not pending.done()  # it waits for the lock...
            assert api.get("/healthz").status_code == 200  # ...and the loop answers meanwhile
            assert not pending.done()
            holder.execute("COMMIT")
            assert pending.result(timeout=60).json() == {"accepted": 1, "duplicate": False}
    finally:
        holder.close()
    assert [point["value"] for point in api.get("/api/runs/r/metrics/loss").json()["points"]] == [1.0]


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_small_batches_are_stored_without_a_thread_hand_off_and_large_ones_with_one(
        api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    handed_off: list[int] = []
    real = routing.run_in_threadpool

    async def counting(function: Callable[..., Any], *args: Any) -> Any:
        handed_off.append(len(args[-1]) if isinstance(args[-1], bytes) else -1)
        return await real(function, *args)

    monkeypatch.setattr(routing, "run_in_threadpool", counting)
    assert api.post("/api/runs", json=RUN).status_code == 201
    assert api.post("/api/runs/r/metrics", json=POINTS).json() == {"accepted": 1, "duplicate": False}
    assert api.post("/api/runs/r/heartbeat").status_code == 204  # a RUNNING run's heartbeat: one UPDATE, in place
    lines = {"batch_id": "l1", "lines": [{"time": "2026-01-01T00:00:00Z", "message": "step 1"}]}
    assert api.post("/api/runs/r/logs", json=lines).json() == {"accepted": 1, "duplicate": False}
    assert handed_off == []
    rows = [[step, None, {"loss": step * 0.5}] for step in range(4000)]
    body = {"batch_id": "large", "rows": rows}
    assert api.post("/api/runs/r/metrics", json=body).json() == {"accepted": 4000, "duplicate": False}
    assert len(handed_off) == 1 and handed_off[0] > routing.INLINE_MAX_BYTES
    points = api.get("/api/runs/r/metrics/loss", params={"limit": 5000}).json()["points"]
    assert [(point["step"], point["value"]) for point in points] == [(step, step * 0.5) for step in range(4000)]


def test_well_formed_ingest_skips_fastapi_and_everything_else_gets_its_answers(
        api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """`routing.DirectRoute`: valid path and query parameters call the endpoint directly; an invalid, repeated or
    unknown parameter goes FastAPI's way, so its answer is FastAPI's own."""
    fastapi_way: list[str] = []
    ordinary = APIRoute.handle

    async def counted(self: APIRoute, scope: dict, receive: Any, send: Any) -> None:
        if scope["path"].endswith("/metrics"):
            fastapi_way.append(scope["query_string"].decode())
        await ordinary(self, scope, receive, send)

    monkeypatch.setattr(APIRoute, "handle", counted)
    assert api.post("/api/runs", json=RUN).status_code == 201
    batch = {"batch_id": "d", "rows": [[1, None, {"loss": 1.0}]]}
    assert api.post("/api/runs/r/metrics", json=batch).json() == {"accepted": 1, "duplicate": False}
    assert api.post("/api/runs/r/metrics?project=default", json={**batch, "batch_id": "e"}).status_code == 200
    assert fastapi_way == []
    assert api.post("/api/runs/r/metrics?project=default&other=1", json={**batch, "batch_id": "f"}).status_code == 200
    assert api.post("/api/runs/r/metrics?project=a&project=default",
                    json={**batch, "batch_id": "g"}).status_code == 200  # FastAPI takes the last
    empty = api.post("/api/runs/r/metrics?project=", json={**batch, "batch_id": "h"})
    assert empty.status_code == 422 and empty.json()["detail"][0]["loc"] == ["query", "project"]
    long_id = api.post(f"/api/runs/{'r' * 300}/metrics", json=batch)
    assert long_id.status_code == 422 and long_id.json()["detail"][0]["loc"] == ["path", "run_id"]
    assert fastapi_way == ["project=default&other=1", "project=a&project=default", "project=", ""]
    missing = api.post("/api/runs/nope/metrics", json=batch)  # direct, and the app's handlers answer its errors
    assert missing.status_code == 404 and len(fastapi_way) == 4
    assert api.get("/api/runs/r/metrics/loss").json()["points"][0]["value"] == 1.0


def test_a_direct_route_refuses_an_endpoint_it_cannot_call_directly() -> None:
    async def with_header(request: Request, run_id: str, token: Annotated[str | None, Header()] = None) -> None:
        return None

    def plain(request: Request, run_id: str) -> None:
        return None

    for endpoint in (with_header, plain):
        with pytest.raises(TypeError, match="DirectRoute"):
            DirectRoute("/runs/{run_id}", endpoint, methods=["POST"])


def test_fastapi_opentelemetry_is_off_unless_asked(api_settings: Settings) -> None:
    """OPENTELEMETRY=false (the default): no request asks OpenTelemetry whether a provider is configured."""
    signals = ("tracing", "metrics", "logs")
    off, on = (create_app(api_settings.model_copy(update={"opentelemetry": wanted})) for wanted in (False, True))
    assert [off._telemetry[signal] for signal in signals] == [False] * 3
    assert [on._telemetry[signal] for signal in signals] == [True] * 3


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_event_loop_writes_keep_one_connection_outside_the_pool(api_settings: Settings) -> None:
    """The loop's writes go through one connection of their own (`transactions.LoopWriter`): no pool checkout per
    request, usable again after a failed transaction or an invalidated connection, closed when the app stops."""
    with TestClient(create_app(api_settings)) as api:
        engine = api.app.state.engine  # type: ignore[attr-defined]
        checkouts: list[int] = []
        event.listen(engine, "checkout", lambda *_: checkouts.append(1))
        assert api.post("/api/runs", json=RUN).status_code == 201  # an ORM session: one checkout
        assert api.post("/api/runs/r/metrics", json=POINTS).status_code == 200  # opens the loop's connection
        opened = len(checkouts)
        for index in range(5):
            body = {"batch_id": f"loop{index}", "points": [{"key": "loss", "step": index + 2, "value": 0.5}]}
            assert api.post("/api/runs/r/metrics", json=body).status_code == 200
            assert api.post("/api/runs/nobody/metrics", json=body).status_code == 404  # rolled back mid-transaction
            assert api.post("/api/runs/r/heartbeat").status_code == 204
        assert len(checkouts) == opened and engine.pool.checkedout() == 0
        writer = transactions._LOOP_WRITERS[engine]
        writer._connection._pooled.invalidate()  # e.g. a dropped connection: the next write opens another
        assert api.post("/api/runs/r/metrics", json={**POINTS, "batch_id": "after"}).status_code == 200
        assert len(checkouts) == opened + 1
        with (transactions.driver_transaction(engine, wait=False), pytest.raises(transactions.WriterBusy),
              transactions.driver_transaction(engine, wait=False)):
            pass  # in use (here by this thread, in the API by another event loop): refused, not shared
        assert [point["step"] for point in api.get("/api/runs/r/metrics/loss").json()["points"]] == list(range(1, 7))
    assert engine not in transactions._LOOP_WRITERS and writer._connection is None


@pytest.mark.parametrize("telemetry", [False, True])
def test_well_formed_direct_requests_are_answered_before_fastapis_router(
        make_api: Callable[..., TestClient], monkeypatch: pytest.MonkeyPatch, telemetry: bool) -> None:
    """`routing.DirectRoutes`, matched by the request guard: a well-formed batch or heartbeat reaches its endpoint
    without Starlette's exception middleware, FastAPI's router or `DirectRoute.handle`, under the same route label,
    and the app's handlers answer its errors; with OPENTELEMETRY=true FastAPI's router keeps every request (its
    spans name the route)."""
    routed: list[str] = []
    ordinary = Router.__call__

    async def counted(self: Router, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            routed.append(scope["path"])
        await ordinary(self, scope, receive, send)

    monkeypatch.setattr(Router, "__call__", counted)
    api = make_api(opentelemetry=telemetry)
    assert api.post("/api/runs", json=RUN).status_code == 201 and routed == ["/api/runs"]  # not a direct route
    routed.clear()
    lines = {"batch_id": "l1", "lines": [{"time": "2026-01-01T00:00:00Z", "message": "step 1"}]}
    answers = [api.post("/api/runs/r/metrics", json=POINTS).status_code,
               api.post("/api/runs/r/metrics?project=default", json={**POINTS, "batch_id": "b2"}).status_code,
               api.post("/api/runs/r/heartbeat").status_code, api.post("/api/runs/r/logs", json=lines).status_code,
               api.post("/api/runs/nope/heartbeat").status_code]
    assert answers == [200, 200, 204, 200, 404]
    direct = ["/api/runs/r/metrics", "/api/runs/r/metrics", "/api/runs/r/heartbeat", "/api/runs/r/logs",
              "/api/runs/nope/heartbeat"]
    assert routed == (direct if telemetry else [])
    missing = api.post("/api/runs/nope/metrics", json=POINTS)  # the app's handler answers the endpoint's 404
    assert missing.status_code == 404 and set(missing.json()) == {"detail"} and "nope" in missing.json()["detail"]
    assert api.post("/api/runs/r/metrics?project=", json=POINTS).status_code == 422  # not well-formed: routed
    assert routed[-1] == "/api/runs/r/metrics"
    wrong_method = api.get("/api/runs/r/metrics")  # the path of a direct route, another method: FastAPI's 405
    assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
    counts = request_counts(api)
    assert counts[("POST", "/api/runs/{run_id}/metrics", "200")] == 2
    assert counts[("POST", "/api/runs/{run_id}/heartbeat", "404")] == 1
    assert counts[("POST", "/api/runs/{run_id}/logs", "200")] == 1
    assert api.app.url_path_for("ingest_metrics", run_id="r") == "/api/runs/r/metrics"  # type: ignore[attr-defined]


def test_a_direct_endpoints_errors_get_the_apps_answers(api_settings: Settings,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """What a directly called endpoint raises is answered as the exception middleware would: the app's handler
    for its class (a database error: 503 with Retry-After while the database is busy), and a 500 from the server
    error layer for anything unhandled; the request is counted under its route either way."""
    from sqlalchemy.exc import OperationalError
    from trainmon.metadata_api.routes import points

    failures: list[Exception] = []

    def failing(*_args: Any, **_kwargs: Any) -> tuple[int, bool]:
        raise failures[-1]

    with TestClient(create_app(api_settings), raise_server_exceptions=False) as api:
        assert api.post("/api/runs", json=RUN).status_code == 201
        monkeypatch.setattr(points, "store_metric_batch", failing)
        failures.append(OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")))
        busy = api.post("/api/runs/r/metrics", json=POINTS)
        assert busy.status_code == 503 and "retry-after" in busy.headers and busy.json()["detail"]
        failures.append(RuntimeError("a bug"))
        broken = api.post("/api/runs/r/metrics", json=POINTS)
        assert broken.status_code == 500 and broken.text == "Internal Server Error"
        counts = request_counts(api)
        assert counts[("POST", "/api/runs/{run_id}/metrics", "503")] == 1
        assert counts[("POST", "/api/runs/{run_id}/metrics", "500")] == 1


def test_direct_matches_are_remembered_per_request_target_in_a_bounded_table(api: TestClient) -> None:
    """`DirectRoutes.match` answers a repeated method + path + query from its table (the routes' regexes and the
    parameters' validation are not run again), the same as the first time; each request gets arguments and path
    parameters of its own; the table is bounded and long targets are not remembered."""
    guard = api.app.middleware_stack  # type: ignore[attr-defined]
    while not hasattr(guard, "direct_routes"):
        guard = guard.app
    direct = guard.direct_routes
    direct._known.clear()

    def scope(path: str, query: bytes = b"", method: str = "POST") -> dict[str, Any]:
        return {"type": "http", "method": method, "path": path, "root_path": "", "query_string": query,
                "app": api.app}

    first, second = scope("/api/runs/r1/metrics", b"project=default"), scope("/api/runs/r1/metrics", b"project=default")
    calls = [direct.match(first), direct.match(second)]
    assert all(call is not None for call in calls) and len(direct._known) == 1
    assert first["route"] is second["route"] and first["path_params"] == second["path_params"] == {"run_id": "r1"}
    assert first["path_params"] is not second["path_params"]
    assert calls[0].keywords["arguments"] == {"run_id": "r1", "project": "default"}  # type: ignore[union-attr]
    assert calls[0].keywords["arguments"] is not calls[1].keywords["arguments"]  # type: ignore[union-attr]
    for _ in range(2):  # not well-formed, or not a direct route: FastAPI's way, every time
        assert direct.match(scope("/api/runs/r1/metrics", b"project=")) is None
        assert direct.match(scope("/api/runs/r1/metrics", method="GET")) is None
        assert direct.match(scope("/api/experiments")) is None
    assert direct.match(scope("/api/runs/r1/metrics", b"x" * 600)) is None and len(direct._known) == 4
    direct.MAX_REMEMBERED = 6
    for index in range(5):
        assert direct.match(scope(f"/api/runs/r{index + 2}/heartbeat")) is not None
    assert 1 <= len(direct._known) <= 6
