"""The run context (trainmon.client.context): captured at start, stored with the run, never an error.

In a temporary git repository with a dirty tracked file: commit, branch, dirty flag, the hash of `git diff HEAD`
and the command line reach the API; without git on PATH, or outside a repository, the git part is absent and the
run is recorded all the same; TRAINMON_CAPTURE_CONTEXT=false leaves the context out; the API bounds its size; an
API from before the field still records the run (registered again without the context).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from integration_support import Api, monitor_kwargs
from trainmon.client import context as run_context
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def dirty_repo(tmp_path: Path) -> Path:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "experiment-branch")
    git(repo, "config", "user.email", "t@example.invalid")
    git(repo, "config", "user.name", "t")
    (repo / "train.py").write_text("print('v1')\n")
    git(repo, "add", "train.py")
    git(repo, "commit", "-q", "-m", "first")
    (repo / "train.py").write_text("print('v2: not committed')\n")
    return repo


def test_context_in_a_dirty_repository(dirty_repo: Path) -> None:
    context = run_context.capture_context(world_size=4, cwd=str(dirty_repo))
    diff = subprocess.run(["git", "diff", "HEAD", "--no-color", "--no-ext-diff", "--binary"], cwd=dirty_repo,
                          check=True, capture_output=True).stdout
    assert context["git"] == {"commit": git(dirty_repo, "rev-parse", "HEAD"), "branch": "experiment-branch",
                              "dirty": True, "diff_sha256": hashlib.sha256(diff).hexdigest()}
    assert context["world_size"] == 4
    assert context["command"]["argv"] == sys.argv[:run_context.MAX_ARGS]
    assert context["python"]["version"] == ".".join(map(str, sys.version_info[:3]))
    assert context["packages"]["trainmon"] and "torch" in context["packages"]
    assert context["hostname"]
    git(dirty_repo, "commit", "-q", "-am", "second")
    clean = run_context.git_state(str(dirty_repo))
    assert clean["dirty"] is False and "diff_sha256" not in clean


def test_no_git_part_without_git_or_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outside = tmp_path / "not-a-repo"
    outside.mkdir()
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # no repository above it either
    context = run_context.capture_context(cwd=str(outside))
    assert "git" not in context and context["command"]["cwd"] == str(outside)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))  # git absent
    assert run_context.git_state(str(tmp_path)) == {}
    assert "git" not in run_context.capture_context(cwd=str(outside))


def test_the_context_is_stored_with_the_run(api: Api, dirty_repo: Path, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(dirty_repo)
    with TrainingMonitor("context-git", **monitor_kwargs(api, tmp_path)) as monitor:
        monitor.log_metrics({"loss": 1.0}, 0)
    run = api.run(monitor.run_id)
    assert run["git_commit"] == git(dirty_repo, "rev-parse", "HEAD")
    assert run["context"]["git"]["dirty"] is True and run["context"]["git"]["commit"] == run["git_commit"]
    assert run["context"]["command"]["argv"][0] == sys.argv[0] and run["context"]["world_size"] == 1


def test_without_git_the_run_is_recorded_without_a_git_part(api: Api, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with TrainingMonitor("context-no-git", **monitor_kwargs(api, tmp_path)) as monitor:
        monitor.log_metrics({"loss": 1.0}, 0)
    run = api.wait_status(monitor.run_id, "COMPLETED")
    assert run["git_commit"] is None and "git" not in run["context"] and run["context"]["packages"]


def test_capture_context_can_be_turned_off(api: Api, tmp_path: Path) -> None:
    kwargs = {**monitor_kwargs(api, tmp_path), "env": {"TRAINMON_CAPTURE_CONTEXT": "false"}}
    with TrainingMonitor("context-off", **kwargs) as monitor:
        pass
    assert api.run(monitor.run_id)["context"] is None
    with TrainingMonitor("context-off", **monitor_kwargs(api, tmp_path), capture_context=False) as monitor:
        pass
    assert api.run(monitor.run_id)["context"] is None


def test_the_api_bounds_the_context(api: Api) -> None:
    body = {"experiment": "context-limits", "run_id": "context-too-large", "context": {"blob": "x" * 70_000}}
    answer = requests.post(f"{api.url}/api/runs", json=body, timeout=10)
    assert answer.status_code == 422 and "context" in answer.text
    body = {"experiment": "context-limits", "run_id": "context-ok", "context": {"git": {"dirty": False}}}
    assert requests.post(f"{api.url}/api/runs", json=body, timeout=10).status_code == 201
    assert api.run("context-ok")["context"] == {"git": {"dirty": False}}


def test_the_sdk_keeps_its_context_under_its_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["train.py", *(["--flag=" + "v" * 1000] * 200)])
    context = run_context.capture_context()
    assert len(str(context).encode()) < run_context.MAX_CONTEXT_BYTES
    assert context["command"]["truncated"] is True


class OldApi(BaseHTTPRequestHandler):
    """An API from before the `context` field: POST /api/runs refuses unknown fields (422), the rest is accepted."""

    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        if self.path == "/api/runs":
            type(self).bodies.append(body)
            if "context" in body:
                detail = [{"type": "extra_forbidden", "loc": ["body", "context"], "msg": "Extra inputs are not "
                                                                                         "permitted"}]
                return self.answer(422, {"detail": detail})
            return self.answer(201, {"run_id": body["run_id"], "experiment_id": 1})
        return self.answer(200, {"accepted": 0, "duplicate": False})

    def answer(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


def test_an_api_without_the_context_field_still_records_the_run(tmp_path: Path) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), OldApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        kwargs = {**monitor_kwargs(Api(f"http://127.0.0.1:{server.server_port}"), tmp_path)}
        with TrainingMonitor("context-old-api", **kwargs) as monitor:
            assert monitor.recorder.enabled and monitor.recorder.experiment_id == 1
    finally:
        server.shutdown()
        server.server_close()
    first, second = OldApi.bodies
    assert "context" in first and "context" not in second and second["run_id"] == monitor.run_id


def fake_nvml(delay: float = 0.0) -> types.SimpleNamespace:
    """An NVML with two H200s, driver 570.124.06, CUDA 12.8 (as nvidia-ml-py returns them: bytes or str)."""
    memory = types.SimpleNamespace(total=150_754_820_096)

    def init() -> None:
        time.sleep(delay)

    return types.SimpleNamespace(
        nvmlInit=init, nvmlShutdown=lambda: None, nvmlSystemGetDriverVersion=lambda: b"570.124.06",
        nvmlSystemGetCudaDriverVersion_v2=lambda: 12080, nvmlDeviceGetCount=lambda: 2,
        nvmlDeviceGetHandleByIndex=lambda index: index, nvmlDeviceGetName=lambda handle: "NVIDIA H200",
        nvmlDeviceGetMemoryInfo=lambda handle: memory)


def test_gpus_driver_and_cuda_versions_from_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml())
    context = run_context.capture_context()
    assert context["driver_version"] == "570.124.06" and context["cuda_driver_version"] == "12.8"
    assert context["gpus"] == [{"index": i, "name": "NVIDIA H200", "memory_total_bytes": 150_754_820_096}
                               for i in (0, 1)]


def test_a_slow_nvml_is_left_out_within_the_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_nvml(delay=run_context.NVML_TIMEOUT + 3))
    started = time.monotonic()
    context = run_context.capture_context()
    assert time.monotonic() - started < run_context.NVML_TIMEOUT + 1.5
    assert "gpus" not in context and "driver_version" not in context and context["packages"]
