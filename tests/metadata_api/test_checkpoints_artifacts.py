"""Checkpoints (register, re-register, GET /api/models) and artifacts (atomic files, metadata, path traversal)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.orm import Session, sessionmaker
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.settings import Settings

SHA_A, SHA_B = "a" * 64, "B" * 64


@pytest.fixture
def experiment_id(api: TestClient) -> int:
    answer = api.post("/api/runs", json={"experiment": "files", "run_id": "run-1"})
    assert answer.status_code == 201
    return answer.json()["experiment_id"]


def checkpoint(name: str, **fields: object) -> dict:
    return {"name": name, "uri": f"file:///ckpt/{name}", "size_bytes": 1234, "sha256": SHA_A, **fields}


def test_register_checkpoints_and_list_models(api: TestClient, experiment_id: int) -> None:
    first = api.post("/api/runs/run-1/checkpoints", json=checkpoint("step-100.pt", step=100, epoch=1,
                                                                     metrics={"loss": 0.5, "acc": 0.9}))
    assert first.status_code == 201, first.text
    body = first.json()
    assert (body["name"], body["step"], body["epoch"], body["metrics"]) == ("step-100.pt", 100, 1,
                                                                            {"loss": 0.5, "acc": 0.9})
    assert api.post("/api/runs/run-1/checkpoints", json=checkpoint("step-200.pt", step=200)).status_code == 201
    resaved = api.post("/api/runs/run-1/checkpoints", json=checkpoint("step-100.pt", step=100, sha256=SHA_B,
                                                                       size_bytes=99))
    assert resaved.status_code == 200
    assert resaved.json()["id"] == body["id"] and resaved.json()["sha256"] == SHA_B.lower()
    models = api.get(f"/api/models/{experiment_id}").json()
    assert models["experiment_id"] == experiment_id and models["total"] == 2
    assert [m["name"] for m in models["items"]] == ["step-100.pt", "step-200.pt"]  # newest registration first
    assert models["items"][0]["size_bytes"] == 99
    page = api.get(f"/api/models/{experiment_id}", params={"limit": 1, "offset": 1}).json()
    assert [m["name"] for m in page["items"]] == ["step-200.pt"] and page["total"] == 2


def test_non_finite_checkpoint_metrics_are_stored_as_strings(api: TestClient, experiment_id: int) -> None:
    """Metrics at save time may be NaN/Infinity (a diverged run); JSON's bare tokens and the contract's strings
    both store (PostgreSQL's json type rejects bare NaN) and read back as the contract's strings."""
    nan, inf = float("nan"), float("inf")
    metrics = {"loss": nan, "grad": {"max": inf, "min": -inf}, "acc": "NaN", "n": [1.5, nan]}
    body = json.dumps(checkpoint("diverged.pt", metrics=metrics))  # bare NaN / Infinity tokens
    assert "NaN" in body and "Infinity" in body
    answer = api.post("/api/runs/run-1/checkpoints", content=body, headers={"content-type": "application/json"})
    assert answer.status_code == 201, answer.text
    expected = {"loss": "NaN", "grad": {"max": "Infinity", "min": "-Infinity"}, "acc": "NaN", "n": [1.5, "NaN"]}
    assert answer.json()["metrics"] == expected
    assert api.get(f"/api/models/{experiment_id}").json()["items"][0]["metrics"] == expected


def test_non_finite_artifact_metadata_is_stored_as_strings(api: TestClient, experiment_id: int) -> None:
    answer = upload(api, "hist.json", b"{}", kind="file", metadata='{"max": Infinity, "mean": NaN}')
    assert answer.status_code == 201, answer.text
    assert answer.json()["metadata"] == {"max": "Infinity", "mean": "NaN"}
    listed = api.get("/api/runs/run-1/artifacts").json()["items"]
    assert [item["metadata"] for item in listed] == [{"max": "Infinity", "mean": "NaN"}]


@pytest.mark.parametrize("name", ["../escape.pt", "dir/ckpt.pt", "dir\\ckpt.pt", "..", "a..b"])
def test_checkpoint_names_with_paths_are_400(api: TestClient, experiment_id: int, name: str) -> None:
    answer = api.post("/api/runs/run-1/checkpoints", json=checkpoint(name))
    assert answer.status_code == 400 and "name" in answer.json()["detail"]
    assert api.get(f"/api/models/{experiment_id}").json()["total"] == 0


@pytest.mark.parametrize(("change", "field"), [({"sha256": "xyz"}, "sha256"), ({"size_bytes": -1}, "size_bytes"),
                                               ({"step": "ten"}, "step"), ({"bogus": 1}, "bogus")])
def test_bad_checkpoint_fields_are_422(api: TestClient, experiment_id: int, change: dict, field: str) -> None:
    answer = api.post("/api/runs/run-1/checkpoints", json={**checkpoint("c.pt"), **change})
    assert answer.status_code == 422 and field in answer.text


def upload(api: TestClient, name: str, content: bytes, step: int | None = None, kind: str = "image",
           metadata: str | None = None, headers: dict | None = None):
    data = {"kind": kind, "name": name}
    if step is not None:
        data["step"] = str(step)
    if metadata is not None:
        data["metadata"] = metadata
    return api.post("/api/runs/run-1/artifacts", data=data, files={"file": ("upload.bin", content, "image/png")},
                    headers=headers or {})


def files_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_artifact_upload_writes_the_file_and_its_metadata(api: TestClient, api_settings: Settings,
                                                          experiment_id: int) -> None:
    content = b"\x89PNG fake image bytes" * 100
    answer = upload(api, "samples.png", content, step=3, metadata=json.dumps({"width": 64, "caption": "s"}))
    assert answer.status_code == 201, answer.text
    body = answer.json()
    expected = f"experiments/{experiment_id}/artifacts/run-1/step-3/samples.png"
    assert body["path"] == expected and body["kind"] == "image" and body["step"] == 3
    assert body["size_bytes"] == len(content) and body["sha256"] == hashlib.sha256(content).hexdigest()
    assert body["metadata"] == {"width": 64, "caption": "s"}
    assert files_under(api_settings.artifact_root) == [api_settings.artifact_root / expected]
    assert (api_settings.artifact_root / expected).read_bytes() == content
    download = api.get(f"/api/runs/run-1/artifacts/{body['id']}/file")
    assert download.status_code == 200 and download.content == content
    listing = api.get("/api/runs/run-1/artifacts", params={"kind": "image"}).json()
    assert listing["total"] == 1 and listing["items"][0]["id"] == body["id"]


def test_uploading_the_same_name_and_step_replaces_it(api: TestClient, api_settings: Settings,
                                                      experiment_id: int) -> None:
    first = upload(api, "hist.json", b"old", step=1, kind="histogram").json()
    second = upload(api, "hist.json", b"new content", step=1, kind="histogram")
    assert second.status_code == 200 and second.json()["id"] == first["id"]
    assert api.get(f"/api/runs/run-1/artifacts/{first['id']}/file").content == b"new content"
    assert upload(api, "hist.json", b"other step", step=2, kind="histogram").status_code == 201
    assert [p.name for p in files_under(api_settings.artifact_root)] == ["hist.json", "hist.json"]  # no .part left


@pytest.mark.parametrize("name", ["../../evil.png", "a/b.png", "a\\b.png", "..", "x..png", "/etc/passwd"])
def test_artifact_path_traversal_is_400_and_writes_nothing(api: TestClient, api_settings: Settings,
                                                           tmp_path: Path, experiment_id: int, name: str) -> None:
    before = files_under(tmp_path)
    answer = upload(api, name, b"payload")
    assert answer.status_code == 400, answer.text
    assert "name" in answer.json()["detail"]
    assert files_under(tmp_path) == before
    assert api.get("/api/runs/run-1/artifacts").json()["total"] == 0


@pytest.mark.parametrize(("data", "field"), [({"kind": "video", "name": "v.mp4"}, "kind"),
                                             ({"kind": "file", "name": "m.txt", "metadata": "{bad"}, "metadata"),
                                             ({"kind": "file", "name": "m.txt", "metadata": "[1]"}, "metadata"),
                                             ({"kind": "file", "name": "m.txt", "step": "-1"}, "step")])
def test_bad_artifact_fields_are_422(api: TestClient, experiment_id: int, data: dict, field: str) -> None:
    answer = api.post("/api/runs/run-1/artifacts", data=data, files={"file": ("x", b"x", "text/plain")})
    assert answer.status_code == 422 and field in answer.text


def test_an_artifact_over_the_limit_is_413_and_leaves_no_file(make_api: Callable[..., TestClient],
                                                               api_settings: Settings, experiment_id: int) -> None:
    small = make_api(max_artifact_bytes=1000)
    assert upload(small, "big.bin", b"x" * 5000, kind="file").status_code == 413
    assert files_under(api_settings.artifact_root) == []
    assert small.get("/api/runs/run-1/artifacts").json()["total"] == 0


def test_a_read_token_cannot_upload_or_register(api: TestClient, experiment_id: int,
                                                session_factory: sessionmaker[Session]) -> None:
    with session_factory() as session:
        token = create_token(session, "default", "read")
        session.commit()
    headers = {"Authorization": f"Bearer {token}"}
    assert upload(api, "a.png", b"x", headers=headers).status_code == 403
    assert api.post("/api/runs/run-1/checkpoints", json=checkpoint("c.pt"), headers=headers).status_code == 403
    assert api.get(f"/api/models/{experiment_id}", headers=headers).status_code == 200
