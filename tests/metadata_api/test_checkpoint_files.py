"""Checkpoint files: upload (streamed, checked against the registered sha256, atomic), download with the digest
in headers, the run's checkpoint list (newest first, name/step filters), re-registration, limits."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from trainmon.metadata_api.settings import Settings

RUN = "ckpt-run"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def experiment_id(api: TestClient) -> int:
    answer = api.post("/api/runs", json={"experiment": "ckpts", "run_id": RUN})
    assert answer.status_code == 201
    return answer.json()["experiment_id"]


def register(api: TestClient, name: str, data: bytes, run: str = RUN, **fields: object) -> dict:
    body = {"name": name, "uri": f"file:///local/{name}", "size_bytes": len(data), "sha256": sha(data), **fields}
    answer = api.post(f"/api/runs/{run}/checkpoints", json=body)
    assert answer.status_code in (200, 201), answer.text
    return answer.json()


def upload(api: TestClient, checkpoint_id: int, data: bytes, run: str = RUN, field: str = "file"):  # noqa: ANN201
    return api.post(f"/api/runs/{run}/checkpoints/{checkpoint_id}/file",
                    files={field: ("checkpoint.pt", data, "application/octet-stream")})


def stored_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_upload_then_download_with_digest_headers(api: TestClient, api_settings: Settings, experiment_id: int) -> None:
    data = bytes(range(256)) * 40_000  # 10 MB: several flushes of the stream
    registered = register(api, "checkpoint-epoch00003-rank0.pt", data, step=300, epoch=3)
    assert (registered["stored"], registered["path"]) == (False, None)
    answer = upload(api, registered["id"], data)
    assert answer.status_code == 200, answer.text
    relative = f"experiments/{experiment_id}/checkpoints/{RUN}/checkpoint-epoch00003-rank0.pt"
    assert (answer.json()["stored"], answer.json()["path"], answer.json()["id"]) == (True, relative, registered["id"])
    assert stored_files(api_settings.artifact_root) == [relative]  # no temporary file left behind
    assert (api_settings.artifact_root / relative).read_bytes() == data
    download = api.get(f"/api/runs/{RUN}/checkpoints/{registered['id']}/file")
    assert download.status_code == 200 and download.content == data
    assert download.headers["content-type"] == "application/octet-stream"
    assert download.headers["content-disposition"].startswith("attachment;")
    assert "checkpoint-epoch00003-rank0.pt" in download.headers["content-disposition"]
    assert download.headers["etag"] == f'"{sha(data)}"'
    assert download.headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(data).digest()).decode()}:"
    assert api.get(f"/api/models/{experiment_id}").json()["items"][0]["stored"] is True
    assert upload(api, registered["id"], data).status_code == 200  # a retried upload: same bytes, same answer


def test_bytes_that_do_not_match_the_registered_sha256_are_refused(api: TestClient, api_settings: Settings,
                                                                   experiment_id: int) -> None:
    registered = register(api, "c.pt", b"the real bytes")
    answer = upload(api, registered["id"], b"other bytes")
    assert answer.status_code == 422 and "sha256 mismatch" in answer.text  # detail: a 422 list, loc ["file"]
    assert stored_files(api_settings.artifact_root) == []
    assert api.get(f"/api/runs/{RUN}/checkpoints/{registered['id']}").status_code in (404, 405)
    assert api.get(f"/api/runs/{RUN}/checkpoints").json()["items"][0]["stored"] is False


def test_a_checkpoint_registered_by_uri_only_has_no_file(api: TestClient, experiment_id: int) -> None:
    registered = register(api, "remote.pt", b"x", uri="s3://bucket/remote.pt")
    answer = api.get(f"/api/runs/{RUN}/checkpoints/{registered['id']}/file")
    assert answer.status_code == 404
    assert "registered by uri only" in answer.json()["detail"] and "s3://bucket/remote.pt" in answer.json()["detail"]
    missing = api.get(f"/api/runs/{RUN}/checkpoints/999/file")
    assert (missing.status_code, missing.json()["detail"]) == (404, f"checkpoint_id: run {RUN!r} has no checkpoint 999")
    assert upload(api, 999, b"x").status_code == 404
    assert api.get(f"/api/runs/{RUN}/checkpoints/{2**31}/file").status_code == 422  # INTEGER ids


def test_reregistering_with_other_bytes_keeps_the_old_file_until_the_new_one_is_uploaded(
        api: TestClient, api_settings: Settings, experiment_id: int) -> None:
    old, new = b"old weights", b"new weights!"
    first = register(api, "latest.pt", old)
    assert upload(api, first["id"], old).status_code == 200
    path = api_settings.artifact_root / f"experiments/{experiment_id}/checkpoints/{RUN}/latest.pt"
    again = register(api, "latest.pt", old)  # a replayed registration: still stored
    assert again["stored"] is True
    replaced = register(api, "latest.pt", new)
    assert (replaced["id"], replaced["stored"], replaced["sha256"]) == (first["id"], False, sha(new))
    assert path.read_bytes() == old  # not dropped before the new file is in place
    assert api.get(f"/api/runs/{RUN}/checkpoints/{first['id']}/file").status_code == 404  # never the stale bytes
    assert upload(api, first["id"], old).status_code == 422  # the old bytes no longer match
    assert upload(api, first["id"], new).status_code == 200
    assert path.read_bytes() == new and stored_files(api_settings.artifact_root) == [
        str(path.relative_to(api_settings.artifact_root))]
    assert api.get(f"/api/runs/{RUN}/checkpoints/{first['id']}/file").content == new


def test_list_a_runs_checkpoints_newest_first_with_filters(api: TestClient, experiment_id: int) -> None:
    for step in (100, 200, 300):
        for rank in (0, 1):
            register(api, f"step{step:05d}-rank{rank}.pt", f"{step}-{rank}".encode(), step=step)
    page = api.get(f"/api/runs/{RUN}/checkpoints", params={"limit": 2}).json()
    assert (page["total"], page["limit"], page["offset"]) == (6, 2, 0)
    assert [c["name"] for c in page["items"]] == ["step00300-rank1.pt", "step00300-rank0.pt"]  # "latest"
    by_step = api.get(f"/api/runs/{RUN}/checkpoints", params={"step": 200}).json()
    assert sorted(c["name"] for c in by_step["items"]) == ["step00200-rank0.pt", "step00200-rank1.pt"]
    by_name = api.get(f"/api/runs/{RUN}/checkpoints", params={"name": "step00100-rank1.pt"}).json()
    assert [(c["name"], c["step"], c["run_id"]) for c in by_name["items"]] == [("step00100-rank1.pt", 100, RUN)]
    assert api.get(f"/api/runs/{RUN}/checkpoints", params={"step": -1}).status_code == 422
    assert api.get("/api/runs/nobody/checkpoints").status_code == 404


def test_upload_errors(make_api: Callable[..., TestClient], api_settings: Settings) -> None:
    api = make_api(max_checkpoint_bytes=1000)
    assert api.post("/api/runs", json={"experiment": "ckpts", "run_id": RUN}).status_code == 201
    big = b"x" * 5000
    registered = register(api, "big.pt", big)
    too_large = upload(api, registered["id"], big)
    assert too_large.status_code == 413 and "MAX_CHECKPOINT_BYTES" in too_large.json()["detail"]
    small = register(api, "small.pt", b"ok")
    assert upload(api, small["id"], b"ok", field="other").status_code == 422  # no `file` field
    as_json = api.post(f"/api/runs/{RUN}/checkpoints/{small['id']}/file", json={"file": "ok"})
    assert as_json.status_code == 415
    assert stored_files(api_settings.artifact_root) == []
    assert upload(api, small["id"], b"ok").status_code == 200


def test_uploads_need_a_write_token_of_the_runs_project(api: TestClient, session_factory) -> None:  # noqa: ANN001
    from trainmon.metadata_api.auth import create_token

    with session_factory() as session:
        tokens = {name: create_token(session, project, scope)
                  for name, project, scope in (("write", "p", "write"), ("read", "p", "read"), ("other", "q", "write"))}
        session.commit()
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    api.post("/api/runs", json={"experiment": "e", "project": "p", "run_id": RUN}, headers=headers["write"])
    body = {"name": "c.pt", "uri": "u", "size_bytes": 2, "sha256": sha(b"ok")}
    checkpoint_id = api.post(f"/api/runs/{RUN}/checkpoints", json=body, headers=headers["write"]).json()["id"]
    path = f"/api/runs/{RUN}/checkpoints/{checkpoint_id}/file"
    files = {"file": ("c.pt", b"ok")}
    assert api.post(path, files=files).status_code == 401
    assert api.post(path, files=files, headers=headers["read"]).status_code == 403
    assert api.post(path, files=files, headers=headers["other"]).status_code == 404
    assert api.post(path, files=files, headers=headers["write"]).status_code == 200
    assert api.get(path, headers=headers["read"]).content == b"ok"
    assert api.get(path, headers=headers["other"]).status_code == 404


@pytest.mark.parametrize("piece", [1, 7, 4096])
def test_the_stream_parser_takes_the_file_field_however_the_body_is_cut(piece: int) -> None:
    """`receive_file_field` on a body cut into `piece`-byte messages, with another field before the file."""
    import asyncio

    import httpx
    from starlette.requests import Request
    from trainmon.metadata_api.services.upload_stream import BadUpload, receive_file_field

    data = bytes(range(256)) * 50 + b"\r\n--not-the-boundary\r\n"
    request = httpx.Request("POST", "http://x/", data={"note": "before"}, files={"file": ("c.pt", data)})
    body = request.read()

    def make(raw: bytes) -> Request:
        messages = [{"type": "http.request", "body": raw[i:i + piece], "more_body": i + piece < len(raw)}
                    for i in range(0, len(raw), piece)]

        async def receive() -> dict:
            return messages.pop(0)

        headers = [(b"content-type", request.headers["content-type"].encode())]
        return Request({"type": "http", "method": "POST", "headers": headers}, receive)

    class Sink(list):
        def write(self, chunk: bytes) -> None:
            self.append(chunk)

    sink = Sink()
    assert asyncio.run(receive_file_field(make(body), "file", sink)) == len(data)
    assert b"".join(sink) == data
    with pytest.raises(BadUpload, match="missing"):
        asyncio.run(receive_file_field(make(body), "weights", Sink()))
