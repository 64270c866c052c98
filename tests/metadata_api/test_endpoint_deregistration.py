"""`DELETE /api/runs/{run_id}/endpoints/{rank}` (issue 11): a rank that finishes while others still run leaves
`/api/sd`, so Prometheus stops scraping it instead of finding it down. Idempotent, write scope, per project
(SQLite and PostgreSQL; with a real Prometheus in tests/stack/test_rank_finish.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import create_token


def register(api: TestClient, rank: int, run_id: str = "ddp", project: str = "vision", **headers: str) -> None:
    body = {"experiment": "e", "project": project, "run_id": run_id, "rank": rank, "world_size": 4,
            "exporter_url": f"http://10.0.0.{rank + 1}:9400/metrics", "host": f"node-{rank}"}
    response = api.post("/api/runs", json=body, headers=headers)
    assert response.status_code in (200, 201), response.text


def sd_ranks(api: TestClient) -> list[tuple[str, str]]:
    return [(group["labels"]["run_id"], group["labels"]["rank"]) for group in api.get("/api/sd").json()]


def test_a_finished_rank_leaves_discovery_while_the_run_goes_on(api: TestClient) -> None:
    for rank in range(4):
        register(api, rank)
    for rank in (3, 1, 2):  # ranks 1-3 finish; rank 0 still runs its final evaluation
        assert api.delete(f"/api/runs/ddp/endpoints/{rank}").status_code == 204
    assert sd_ranks(api) == [("ddp", "0")]
    run = api.get("/api/runs/ddp").json()
    assert run["status"] == "RUNNING"
    assert [endpoint["rank"] for endpoint in run["endpoints"]] == [0]
    assert run["exporter_url"] == "http://10.0.0.1:9400/metrics"


def test_deregistering_is_idempotent_and_registering_again_brings_the_rank_back(api: TestClient) -> None:
    register(api, 0)
    register(api, 1)
    assert api.delete("/api/runs/ddp/endpoints/1").status_code == 204
    assert api.delete("/api/runs/ddp/endpoints/1").status_code == 204  # a retry
    assert api.delete("/api/runs/ddp/endpoints/7").status_code == 204  # never registered
    assert sd_ranks(api) == [("ddp", "0")]
    register(api, 1)  # an elastic restart of that rank
    assert sd_ranks(api) == [("ddp", "0"), ("ddp", "1")]
    assert api.delete("/api/runs/ddp/endpoints/0").status_code == 204
    assert api.delete("/api/runs/ddp/endpoints/1").status_code == 204
    assert sd_ranks(api) == []  # a RUNNING run without endpoints is not a target
    assert api.get("/api/runs/ddp").json()["status"] == "RUNNING"


def test_finished_runs_can_still_deregister(api: TestClient) -> None:
    register(api, 0)
    register(api, 1)
    assert api.post("/api/runs/ddp/status", json={"status": "COMPLETED"}).status_code == 200
    assert api.delete("/api/runs/ddp/endpoints/1").status_code == 204
    assert [endpoint["rank"] for endpoint in api.get("/api/runs/ddp").json()["endpoints"]] == [0]


def test_unknown_runs_and_bad_ranks(api: TestClient) -> None:
    register(api, 0)
    assert api.delete("/api/runs/nope/endpoints/0").status_code == 404
    assert api.delete("/api/runs/ddp/endpoints/-1").status_code == 422
    assert api.delete("/api/runs/ddp/endpoints/x").status_code == 422
    assert sd_ranks(api) == [("ddp", "0")]


def test_it_needs_a_write_token_of_the_runs_project(api: TestClient, session_factory: sessionmaker[Session]) -> None:
    register(api, 0)
    register(api, 1)
    register(api, 0, run_id="other", project="beta")
    with session_factory() as session:
        write = create_token(session, "vision", "write")
        read = create_token(session, "vision", "read")
        beta = create_token(session, "beta", "write")
        session.commit()
    path = "/api/runs/ddp/endpoints/1"
    assert api.delete(path).status_code == 401
    assert api.delete(path, headers={"Authorization": f"Bearer {read}"}).status_code == 403
    assert api.delete(path, headers={"Authorization": f"Bearer {beta}"}).status_code == 404
    assert api.delete(path, headers={"Authorization": f"Bearer {write}"}).status_code == 204
    listed = api.get("/api/sd", headers={"Authorization": f"Bearer {write}"}).json()
    assert [(group["labels"]["run_id"], group["labels"]["rank"]) for group in listed] == [("ddp", "0")]
