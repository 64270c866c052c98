"""Runs (create/join, params, tags) and the experiment read endpoints, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import logging

import pytest
from fastapi.testclient import TestClient
from trainmon.common.files import MAX_NAME_BYTES, NAME_RULE
from trainmon.metadata_api.logging import JsonFormatter
from trainmon.metadata_api.repositories import runs as run_repo


def start(api: TestClient, run_id: str, experiment: str = "resnet", **fields: object) -> dict:
    response = api.post("/api/runs", json={"experiment": experiment, "run_id": run_id, **fields})
    assert response.status_code in (200, 201), response.text
    return response.json()


def test_create_run_keeps_everything_it_was_given(api: TestClient) -> None:
    body = {"experiment": "resnet", "project": "vision", "run_id": "run-1", "host": "gpu-01", "pid": 4242,
            "command": "python train.py --lr 0.1", "git_commit": "0123abc", "rank": 0, "world_size": 8,
            "exporter_url": "http://10.0.0.5:9400/metrics",
            "params": {"lr": 0.1, "optimizer": {"name": "adamw", "betas": [0.9, 0.999]}, "layers": None},
            "tags": {"team": "cv", "purpose": "baseline"}}
    response = api.post("/api/runs", json=body)
    assert response.status_code == 201
    run = response.json()
    assert run["status"] == "RUNNING" and run["end_time"] is None
    assert {k: run[k] for k in ("run_id", "experiment", "project", "host", "pid", "command", "git_commit", "rank",
                                "world_size", "exporter_url", "params", "tags")} == body
    assert api.get("/api/runs/run-1").json() == run


def test_a_second_rank_joins_the_same_run(api: TestClient) -> None:
    first = api.post("/api/runs", json={"experiment": "e", "run_id": "ddp", "rank": 0})
    second = api.post("/api/runs", json={"experiment": "e", "run_id": "ddp", "rank": 1, "tags": {"r1": "up"}})
    assert (first.status_code, second.status_code) == (201, 200)
    assert second.json()["rank"] == 0 and second.json()["tags"] == {"r1": "up"}
    assert api.get("/api/experiments/1").json()["run_count"] == 1


def test_a_rank_that_loses_the_insert_race_joins_the_run(api: TestClient, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks register a new run_id at once: both read "no such run", one insert wins. The loser's insert
    fails on the unique (run id, project); it must start over and join (200), not answer 500."""
    assert api.post("/api/runs", json={"experiment": "ddp", "run_id": "together", "rank": 0}).status_code == 201
    real_find_runs = run_repo.find_runs
    calls = {"n": 0}

    def stale_first_read(session: object, run_id: str, *args: object, **kwargs: object) -> object:
        calls["n"] += 1
        return [] if calls["n"] == 1 else real_find_runs(session, run_id, *args, **kwargs)  # before rank 0 committed

    monkeypatch.setattr(run_repo, "find_runs", stale_first_read)
    joined = api.post("/api/runs", json={"experiment": "ddp", "run_id": "together", "rank": 1})
    assert joined.status_code == 200 and joined.json()["rank"] == 0
    assert calls["n"] >= 2


def test_run_id_is_generated_when_absent_and_each_start_is_a_new_run(api: TestClient) -> None:
    ids = {api.post("/api/runs", json={"experiment": "e"}).json()["run_id"] for _ in range(3)}
    assert len(ids) == 3
    experiment = api.get("/api/experiments").json()["items"][0]
    assert experiment["run_count"] == 3 and experiment["runs_by_status"] == {"RUNNING": 3}


def test_run_id_of_another_experiment_is_a_conflict(api: TestClient) -> None:
    start(api, "shared", experiment="a")
    response = api.post("/api/runs", json={"experiment": "b", "run_id": "shared"})
    assert response.status_code == 409 and "run_id" in response.json()["detail"]


def test_bad_run_fields_are_422_naming_the_field(api: TestClient) -> None:
    cases = {("body", "experiment"): {"experiment": "a/../b"},
             ("body", "run_id"): {"experiment": "e", "run_id": "../etc"},
             ("body", "world_size"): {"experiment": "e", "world_size": 0},
             ("body", "exporter_url"): {"experiment": "e", "exporter_url": "ftp://x"},
             ("body", "surprise"): {"experiment": "e", "surprise": 1}}
    for location, body in cases.items():
        response = api.post("/api/runs", json=body)
        assert response.status_code == 422, body
        assert [tuple(error["loc"]) for error in response.json()["detail"]] == [location]


@pytest.mark.parametrize("name", [" padded", "a..b", "x" * (MAX_NAME_BYTES + 1), "é" * (MAX_NAME_BYTES // 2 + 1)])
def test_experiment_and_project_names_follow_the_common_file_name_rule(api: TestClient, name: str) -> None:
    for field in ("experiment", "project"):
        response = api.post("/api/runs", json={"experiment": "e", "run_id": "named", field: name})
        assert response.status_code == 422, (field, name)
        assert [tuple(error["loc"]) for error in response.json()["detail"]] == [("body", field)]
    longest = "é" * (MAX_NAME_BYTES // 2)
    assert api.post("/api/runs", json={"experiment": longest, "project": longest}).status_code == 201
    experiment = api.get("/openapi.json").json()["components"]["schemas"]["RunCreate"]["properties"]["experiment"]
    assert experiment["maxLength"] == MAX_NAME_BYTES and experiment["description"] == NAME_RULE


def test_unknown_run_is_404_naming_it(api: TestClient) -> None:
    for method, path, body in [("GET", "/api/runs/ghost", None), ("PUT", "/api/runs/ghost/params", {"params": {}}),
                               ("POST", "/api/runs/ghost/tags", {"tags": {}}),
                               ("POST", "/api/runs/ghost/status", {"status": "FAILED"})]:
        response = api.request(method, path, json=body)
        assert response.status_code == 404 and "ghost" in response.json()["detail"]


def test_params_are_replaced_and_tags_merged(api: TestClient) -> None:
    start(api, "r", params={"lr": 0.1, "old": True}, tags={"a": "1", "b": "2"})
    params = {"lr": 0.05, "schedule": {"warmup": 100, "steps": [1000, 2000]}}
    assert api.put("/api/runs/r/params", json={"params": params}).json()["params"] == params
    assert api.post("/api/runs/r/tags", json={"tags": {"b": "3", "c": "4"}}).json()["tags"] == {
        "a": "1", "b": "3", "c": "4"}
    assert api.get("/api/runs/r").json()["params"] == params


def test_non_finite_params_are_stored_as_the_contract_strings(api: TestClient) -> None:
    body = '{"experiment": "e", "run_id": "nan-params", "params": {"lr": NaN, "clip": [Infinity, 1.0]}}'
    created = api.post("/api/runs", content=body, headers={"Content-Type": "application/json"})
    assert created.status_code == 201
    assert created.json()["params"] == {"lr": "NaN", "clip": ["Infinity", 1.0]}
    replaced = api.put("/api/runs/nan-params/params", content='{"params": {"wd": -Infinity}}',
                       headers={"Content-Type": "application/json"})
    assert replaced.json()["params"] == {"wd": "-Infinity"}
    assert api.get("/api/runs/nan-params").json()["params"] == {"wd": "-Infinity"}


def test_experiments_are_listed_newest_first_with_pagination(api: TestClient) -> None:
    for name in ("first", "second", "third"):
        start(api, f"run-{name}", experiment=name)
    page = api.get("/api/experiments", params={"limit": 2}).json()
    assert [e["name"] for e in page["items"]] == ["third", "second"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    rest = api.get("/api/experiments", params={"limit": 2, "offset": 2}).json()
    assert [e["name"] for e in rest["items"]] == ["first"]
    assert api.get("/api/experiments", params={"limit": 0}).status_code == 422


def test_experiment_shows_its_runs(api: TestClient) -> None:
    start(api, "a1", params={"lr": 1})
    start(api, "a2")
    api.post("/api/runs/a1/status", json={"status": "COMPLETED"})
    experiment_id = api.get("/api/runs/a1").json()["experiment_id"]
    detail = api.get(f"/api/experiments/{experiment_id}").json()
    assert detail["name"] == "resnet" and detail["project"] == "default"
    assert [(run["run_id"], run["status"]) for run in detail["runs"]] == [("a1", "COMPLETED"), ("a2", "RUNNING")]
    assert detail["runs_by_status"] == {"COMPLETED": 1, "RUNNING": 1}
    assert detail["runs"][0]["params"] == {"lr": 1}
    assert api.get("/api/experiments/999").status_code == 404
    page = api.get(f"/api/experiments/{experiment_id}", params={"limit": 1, "offset": 1}).json()
    assert [run["run_id"] for run in page["runs"]] == ["a2"]
    assert (page["run_count"], page["limit"], page["offset"]) == (2, 1, 1)


def test_experiment_metrics_are_paged_and_filtered(api: TestClient) -> None:
    experiment_id = start(api, "m1")["experiment_id"]
    start(api, "m2")
    for run_id in ("m1", "m2"):
        points = [{"key": key, "step": step, "value": step * 0.5, "wall_time": 1000.0 + step}
                  for key in ("loss", "acc") for step in range(5)]
        assert api.post(f"/api/runs/{run_id}/metrics", json={"batch_id": "b", "points": points}).status_code == 200
    everything = api.get(f"/api/metrics/{experiment_id}").json()
    assert everything["total"] == 20 and everything["keys"] == ["acc", "loss"]
    assert [(p["run_id"], p["key"], p["step"]) for p in everything["items"][:6]] == [
        ("m1", "acc", 0), ("m1", "acc", 1), ("m1", "acc", 2), ("m1", "acc", 3), ("m1", "acc", 4), ("m1", "loss", 0)]
    page = api.get(f"/api/metrics/{experiment_id}", params={"key": "loss", "run_id": "m2", "limit": 2,
                                                           "offset": 2}).json()
    assert page["total"] == 5
    assert page["items"] == [{"run_id": "m2", "rank": 0, "key": "loss", "step": s, "value": s * 0.5,
                              "wall_time": 1000.0 + s} for s in (2, 3)]
    assert api.get("/api/metrics/12345").status_code == 404


def test_openapi_lists_the_core_endpoints(api: TestClient) -> None:
    paths = api.get("/openapi.json").json()["paths"]
    for path in ("/api/runs", "/api/runs/{run_id}", "/api/runs/{run_id}/status", "/api/runs/{run_id}/heartbeat",
                 "/api/runs/{run_id}/metrics", "/api/runs/{run_id}/params", "/api/runs/{run_id}/tags",
                 "/api/experiments", "/api/experiments/{experiment_id}", "/api/metrics/{experiment_id}", "/api/sd"):
        assert path in paths, path
    ingest = paths["/api/runs/{run_id}/metrics"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert set(ingest["required"]) == {"batch_id"}  # and exactly one of points / rows (checked by the route)
    assert {"batch_id", "rank", "points", "rows"} <= set(ingest["properties"])
    points = ingest["properties"]["points"]
    items = (points.get("items") or next(o for o in points["anyOf"] if o.get("type") == "array")["items"])
    assert set(items["properties"]) == {"key", "step", "value", "wall_time"}


def test_logs_are_json_with_the_documented_fields() -> None:
    record = logging.LogRecord("trainmon.metadata_api.runs", logging.INFO, __file__, 1, "run %s", ("started",), None)
    record.experiment_id = 7
    entry = json.loads(JsonFormatter().format(record))
    assert entry["level"] == "INFO" and entry["component"] == "metadata_api.runs"
    assert entry["experiment_id"] == 7 and entry["message"] == "run started"
    assert entry["timestamp"].endswith("+00:00")


def test_api_metrics_use_route_templates(api: TestClient) -> None:
    start(api, "templated")
    api.get("/api/runs/templated")
    api.get("/api/runs/missing")
    text = api.get("/metrics").text
    assert 'trainmon_api_request_duration_seconds_count{method="GET",route="/api/runs/{run_id}",status="200"} 1.0' \
        in text
    assert 'trainmon_api_request_duration_seconds_count{method="GET",route="/api/runs/{run_id}",status="404"} 1.0' \
        in text
    assert 'trainmon_api_runs{status="RUNNING"} 1.0' in text
