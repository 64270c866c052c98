"""Per-rank exporter endpoints: every rank's `POST /api/runs` records its endpoint, `/api/sd` lists each one of a
RUNNING run, and the run's JSON keeps `exporter_url` (rank 0's, or the first) beside `endpoints` (SQLite and
PostgreSQL; the two-rank scrape by a real Prometheus is in test_sd.py)."""

from __future__ import annotations

from fastapi.testclient import TestClient


def register(api: TestClient, rank: int | None, url: str | None, run_id: str = "ddp", **fields: object) -> dict:
    body = {"experiment": "e", "project": "vision", "run_id": run_id, "rank": rank, "exporter_url": url,
            "host": None if rank is None else f"node-{rank}", **fields}
    response = api.post("/api/runs", json={key: value for key, value in body.items() if value is not None})
    assert response.status_code in (200, 201), response.text
    return response.json()


def endpoint_urls(run: dict) -> dict[int, str]:
    return {endpoint["rank"]: endpoint["url"] for endpoint in run["endpoints"]}


def sd_targets(api: TestClient) -> list[tuple[str, str, str]]:
    return [(group["labels"]["run_id"], group["labels"]["rank"], group["targets"][0]) for group in
            api.get("/api/sd").json()]


def test_every_rank_is_recorded_and_discovered(api: TestClient) -> None:
    register(api, 0, "http://10.0.0.1:9400/metrics", world_size=2)
    joined = register(api, 1, "http://10.0.0.2:9401/metrics", world_size=2)
    assert endpoint_urls(joined) == {0: "http://10.0.0.1:9400/metrics", 1: "http://10.0.0.2:9401/metrics"}
    assert [endpoint["host"] for endpoint in joined["endpoints"]] == ["node-0", "node-1"]
    assert joined["exporter_url"] == "http://10.0.0.1:9400/metrics"
    assert api.get("/api/runs/ddp").json() == joined
    assert api.get("/api/experiments/1").json()["runs"][0]["endpoints"] == joined["endpoints"]
    groups = api.get("/api/sd").json()
    assert groups == [
        {"targets": ["10.0.0.1:9400"], "labels": {"run_id": "ddp", "experiment": "e", "project": "vision",
                                                  "rank": "0"}},
        {"targets": ["10.0.0.2:9401"], "labels": {"run_id": "ddp", "experiment": "e", "project": "vision",
                                                  "rank": "1"}}]


def test_exporter_url_is_rank_zeros_even_when_another_rank_registers_first(api: TestClient) -> None:
    first = register(api, 2, "http://10.0.0.3:9402/metrics")
    assert first["exporter_url"] == "http://10.0.0.3:9402/metrics"  # the first one, while rank 0 is missing
    register(api, 1, "http://10.0.0.2:9401/metrics")
    after_zero = register(api, 0, "http://10.0.0.1:9400/metrics")
    assert after_zero["exporter_url"] == "http://10.0.0.1:9400/metrics"
    assert sorted(endpoint_urls(after_zero)) == [0, 1, 2]


def test_a_resumed_rank_replaces_its_endpoint(api: TestClient) -> None:
    register(api, 0, "http://10.0.0.1:9400/metrics")
    register(api, 1, "http://10.0.0.2:9401/metrics")
    assert api.post("/api/runs/ddp/status", json={"status": "CRASHED"}).status_code == 200
    assert sd_targets(api) == []
    resumed = register(api, 1, "http://10.0.0.9:9500/metrics")  # rank 1 came back on another node
    assert resumed["status"] == "RUNNING"
    assert endpoint_urls(resumed) == {0: "http://10.0.0.1:9400/metrics", 1: "http://10.0.0.9:9500/metrics"}
    assert resumed["endpoints"][1]["host"] == "node-1"
    assert sd_targets(api) == [("ddp", "0", "10.0.0.1:9400"), ("ddp", "1", "10.0.0.9:9500")]


def test_a_resume_with_fewer_ranks_forgets_the_ranks_beyond_the_world(api: TestClient) -> None:
    for rank in range(4):
        register(api, rank, f"http://10.0.0.{rank + 1}:9400/metrics", world_size=4)
    assert api.post("/api/runs/ddp/status", json={"status": "CRASHED"}).status_code == 200
    resumed = register(api, 0, "http://10.0.0.7:9400/metrics", world_size=2)
    assert endpoint_urls(resumed) == {0: "http://10.0.0.7:9400/metrics", 1: "http://10.0.0.2:9400/metrics"}
    assert [rank for _, rank, _ in sd_targets(api)] == ["0", "1"]


def test_ranks_without_an_exporter_and_runs_without_a_rank(api: TestClient) -> None:
    quiet = register(api, 0, None, run_id="quiet")
    assert quiet["endpoints"] == [] and quiet["exporter_url"] is None
    single = register(api, None, "https://trainer.example:8443/custom", run_id="single")
    assert endpoint_urls(single) == {0: "https://trainer.example:8443/custom"}
    assert api.get("/api/sd").json() == [
        {"targets": ["trainer.example:8443"], "labels": {"run_id": "single", "experiment": "e", "project": "vision",
                                                         "rank": "0", "__metrics_path__": "/custom",
                                                         "__scheme__": "https"}}]


def test_finished_runs_leave_discovery_but_keep_their_endpoints(api: TestClient) -> None:
    register(api, 0, "http://10.0.0.1:9400/metrics", run_id="done")
    register(api, 0, "http://10.0.0.5:9400/metrics", run_id="live")
    assert api.post("/api/runs/done/status", json={"status": "COMPLETED"}).status_code == 200
    assert sd_targets(api) == [("live", "0", "10.0.0.5:9400")]
    assert endpoint_urls(api.get("/api/runs/done").json()) == {0: "http://10.0.0.1:9400/metrics"}
