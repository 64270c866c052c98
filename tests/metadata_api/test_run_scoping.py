"""Run ids are unique per project: the same id in two projects is two runs, each project sees only its own, and
nothing of another project leaks (no 409, no experiment name). Open API: `?project=`, else the only match, else 409."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import create_token

RUN = "slurm-4242.0"
POINT = {"key": "loss", "step": 1, "value": 1.0}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def tokens(api: TestClient, session_factory: sessionmaker[Session]) -> dict[str, str]:
    with session_factory() as session:
        made = {project: create_token(session, project, "write") for project in ("alpha", "beta")}
        session.commit()
    return made


def test_two_projects_register_the_same_run_id_and_each_sees_only_its_own(api: TestClient,
                                                                           tokens: dict[str, str]) -> None:
    alpha, beta = bearer(tokens["alpha"]), bearer(tokens["beta"])
    first = api.post("/api/runs", json={"experiment": "secret-alpha-exp", "run_id": RUN, "host": "a"}, headers=alpha)
    assert first.status_code == 201, first.text
    second = api.post("/api/runs", json={"experiment": "beta-exp", "run_id": RUN, "host": "b"}, headers=beta)
    assert second.status_code == 201, second.text  # no 409, no mention of the other project's experiment
    assert "secret-alpha-exp" not in second.text
    assert (second.json()["run_id"], second.json()["project"], second.json()["experiment"]) == (RUN, "beta", "beta-exp")
    for headers, project, value in ((alpha, "alpha", 1.0), (beta, "beta", 2.0)):
        batch = {"batch_id": "same-batch", "points": [{**POINT, "value": value}]}
        assert api.post(f"/api/runs/{RUN}/metrics", json=batch, headers=headers).json() == {"accepted": 1,
                                                                                            "duplicate": False}
        assert api.post(f"/api/runs/{RUN}/notes", json={"text": project}, headers=headers).status_code == 201
        assert api.post(f"/api/runs/{RUN}/tags", json={"tags": {"team": project}}, headers=headers).status_code == 200
    for headers, project, host, value in ((alpha, "alpha", "a", 1.0), (beta, "beta", "b", 2.0)):
        run = api.get(f"/api/runs/{RUN}", headers=headers).json()
        assert (run["project"], run["host"], run["tags"]) == (project, host, {"team": project})
        series = api.get(f"/api/runs/{RUN}/metrics/loss", headers=headers).json()
        assert [p["value"] for p in series["points"]] == [value]
        assert [n["text"] for n in api.get(f"/api/runs/{RUN}/notes", headers=headers).json()["items"]] == [project]
        compared = api.get("/api/compare", params={"runs": RUN, "keys": "loss"}, headers=headers).json()
        assert [(s["experiment"], [p["value"] for p in s["points"]]) for s in compared["series"]] == [
            (run["experiment"], [value])]
        models = api.get(f"/api/metrics/{run['experiment_id']}", params={"run_id": RUN}, headers=headers).json()
        assert [item["value"] for item in models["items"]] == [value]


def test_a_run_id_only_another_project_has_is_a_plain_404(api: TestClient, tokens: dict[str, str]) -> None:
    api.post("/api/runs", json={"experiment": "secret-alpha-exp", "run_id": RUN}, headers=bearer(tokens["alpha"]))
    beta = bearer(tokens["beta"])
    for method, path, body in (("GET", f"/api/runs/{RUN}", None), ("GET", f"/api/runs/{RUN}/checkpoints", None),
                               ("POST", f"/api/runs/{RUN}/heartbeat", {}),
                               ("POST", f"/api/runs/{RUN}/notes", {"text": "x"})):
        answer = api.request(method, path, json=body, headers=beta)
        assert (answer.status_code, answer.json()) == (404, {"detail": f"run_id: no run {RUN!r}"}), path
    unknown = api.get("/api/runs/never-registered", headers=beta)
    assert unknown.status_code == 404  # exactly like a run that exists nowhere
    named = api.get(f"/api/runs/{RUN}", params={"project": "alpha"}, headers=beta)
    assert named.status_code == 403 and "secret" not in named.text


def test_open_api_finds_the_only_run_and_asks_for_project_when_several(api: TestClient) -> None:
    for project in ("alpha", "beta"):
        created = api.post("/api/runs", json={"experiment": f"exp-{project}", "project": project, "run_id": RUN})
        assert created.status_code == 201
    assert api.post("/api/runs", json={"experiment": "solo", "project": "alpha", "run_id": "solo-1"}).status_code == 201
    assert api.get("/api/runs/solo-1").json()["project"] == "alpha"  # the only match, anywhere
    ambiguous = api.get(f"/api/runs/{RUN}")
    assert ambiguous.status_code == 409
    assert ambiguous.json()["detail"] == f"run_id: run id {RUN!r} exists in several projects; give ?project="
    assert api.post(f"/api/runs/{RUN}/heartbeat").status_code == 409
    for project in ("alpha", "beta"):
        run = api.get(f"/api/runs/{RUN}", params={"project": project}).json()
        assert (run["project"], run["experiment"]) == (project, f"exp-{project}")
        batch = {"batch_id": "b", "points": [POINT]}
        assert api.post(f"/api/runs/{RUN}/metrics", params={"project": project}, json=batch).status_code == 200
    assert api.get(f"/api/runs/{RUN}", params={"project": "gamma"}).status_code == 404
    assert api.get("/api/compare", params={"runs": RUN, "keys": "loss"}).status_code == 409
    compared = api.get("/api/compare", params={"runs": RUN, "keys": "loss", "project": "beta"}).json()
    assert [s["experiment"] for s in compared["series"]] == ["exp-beta"]


def test_joining_in_another_experiment_of_the_same_project_is_still_a_conflict(api: TestClient) -> None:
    assert api.post("/api/runs", json={"experiment": "a", "project": "p", "run_id": RUN}).status_code == 201
    clash = api.post("/api/runs", json={"experiment": "b", "project": "p", "run_id": RUN})
    assert clash.status_code == 409 and "'a'" in clash.json()["detail"]
    assert api.post("/api/runs", json={"experiment": "b", "project": "q", "run_id": RUN}).status_code == 201


def test_service_discovery_labels_each_project_s_run(api: TestClient) -> None:
    for project, port in (("alpha", 9401), ("beta", 9402)):
        body = {"experiment": "e", "project": project, "run_id": RUN, "exporter_url": f"http://10.0.0.1:{port}/metrics"}
        assert api.post("/api/runs", json=body).status_code == 201
    groups = sorted((g["labels"]["project"], g["labels"]["run_id"], g["targets"][0]) for g in api.get("/api/sd").json())
    assert groups == [("alpha", RUN, "10.0.0.1:9401"), ("beta", RUN, "10.0.0.1:9402")]
