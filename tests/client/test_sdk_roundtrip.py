"""Every SDK method round-trips through the real metadata API (uvicorn subprocess, SQLite file)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from apiserver import REPO, ApiServer, require_torch
from trainmon.client.api_client import ApiClient
from trainmon.exporter import TrainingMonitor

pytestmark = pytest.mark.integration


def online_monitor(tmp_path: Path, server: ApiServer, experiment: str = "roundtrip", **kwargs: Any) -> TrainingMonitor:
    return TrainingMonitor(experiment, port=False, gpu=False, system=False, handle_signals=False, env={},
                           api_url=server.url, spool_dir=str(tmp_path / "spool"), **kwargs)


def rows(server: ApiServer, sql: str, *args: object) -> list[tuple]:
    with sqlite3.connect(server.db_path) as db:
        return list(db.execute(sql, args))


def test_every_sdk_method_round_trips(tmp_path: Path, api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> None:
    torch = require_torch()
    monkeypatch.chdir(tmp_path)
    monitor = online_monitor(tmp_path, api_server, params={"lr": 0.01}, tags={"team": "nlp"})
    run_id = monitor.run_id
    monitor.log_params({"model": {"layers": 12, "dropout": 0.1}, "schedule": ["warmup", "cosine"]})
    monitor.add_tag("dataset", "wiki")
    monitor.add_note("baseline run")
    monitor.log_text("epoch 0 started")
    logger = logging.getLogger("roundtrip-test")
    logger.setLevel(logging.INFO)
    logger.addHandler(monitor.logging_handler())
    logger.error("disk almost full")
    for step in range(50):
        monitor.log_metrics({"loss": 2.0 - step / 50, "val/acc": float("nan") if step == 7 else step / 50}, step=step)
    checkpoints = [monitor.save_checkpoint({"step": step, "w": list(range(step))}, step=step * 10, epoch=step,
                                           metrics={"loss": 2.0 - step / 5}, keep_last=2) for step in range(3)]
    model = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1))
    image = monitor.log_image("samples", np.random.default_rng(0).random((8, 8, 3)), step=49)
    histogram = monitor.log_histogram("layer0", model[0].weight, step=49, bins=16)
    graph = monitor.log_graph(model, torch.zeros(2, 3))
    monitor.finish("COMPLETED")

    run = api_server.get(f"/api/runs/{run_id}")
    assert run["status"] == "COMPLETED" and run["experiment"] == "roundtrip"
    assert run["params"] == {"lr": 0.01, "model": {"layers": 12, "dropout": 0.1}, "schedule": ["warmup", "cosine"]}
    assert run["tags"] == {"team": "nlp", "dataset": "wiki"}
    notes = api_server.get(f"/api/runs/{run_id}/notes")["items"]
    assert [note["text"] for note in notes] == ["baseline run"]
    logs = api_server.get(f"/api/logs/{run['experiment_id']}", run_id=run_id)["items"]
    assert [(line["level"], line["message"]) for line in logs] == [("INFO", "epoch 0 started"),
                                                                   ("ERROR", "disk almost full")]
    acc = api_server.get(f"/api/runs/{run_id}/metrics/val_acc")["points"]
    assert len(acc) == 50 and acc[7]["value"] == "NaN" and acc[49]["value"] == 49 / 50

    # Checkpoints: files under experiments/<experiment_id>/checkpoints/<run>/rank0, keep_last=2, sha256 as registered.
    directory = tmp_path / "experiments" / str(run["experiment_id"]) / "checkpoints" / run_id / "rank0"
    assert sorted(directory.iterdir()) == checkpoints[1:] and not checkpoints[0].exists()
    models = api_server.get(f"/api/models/{run['experiment_id']}")["items"]
    registered = {model["name"]: model for model in models}
    assert set(registered) == {path.name for path in checkpoints}  # all three were registered when saved
    for path in checkpoints[1:]:
        entry = registered[path.name]
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        assert entry["size_bytes"] == path.stat().st_size
    assert registered[checkpoints[2].name]["metrics"] == {"loss": 1.6} and registered[checkpoints[2].name]["step"] == 20

    # Artifacts: uploaded files are byte-identical to what the trainer wrote.
    artifacts = rows(api_server, "SELECT kind, name, step, sha256 FROM artifacts "
                     "WHERE run_key = (SELECT key FROM runs WHERE id = ?) ORDER BY id", run_id)
    expected = [("image", "samples.png", 49), ("histogram", "layer0.hist.json", 49),
                ("graph", "Sequential.graph.json", None)]
    files = [image, histogram, graph]
    if importlib.util.find_spec("onnx"):  # log_graph also exports ONNX
        expected.append(("file", "Sequential.onnx", None))
        files.append(graph.with_name("Sequential.onnx"))
    assert [(kind, name, step) for kind, name, step, _sha in artifacts] == expected
    for (_kind, _name, _step, sha), path in zip(artifacts, files, strict=True):
        assert sha == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sum(json.loads(histogram.read_text())["counts"]) == 15
    assert json.loads(graph.read_text())["parameters"] == 3 * 5 + 5 + 5 + 1


def test_compare_experiments_gives_last_min_max_per_key_and_urls(tmp_path: Path, api_server: ApiServer) -> None:
    for experiment, scale in (("cmp-a", 1.0), ("cmp-b", 2.0)):
        monitor = online_monitor(tmp_path / experiment, api_server, experiment=experiment)
        for step in range(100):
            monitor.log_metrics({"loss": scale * (100 - step), "acc": step / 100}, step=step)
        monitor.log_metrics({"loss": scale * 500}, step=100)  # a spike at the last step
        monitor.finish()
    table = monitor.compare_experiments(["cmp-a", "cmp-b"], keys=["loss", "acc"])
    assert [row["experiment"] for row in table] == ["cmp-a", "cmp-b"]
    assert [(row["loss.last"], row["loss.min"], row["loss.max"]) for row in table] == [(500, 1, 500),
                                                                                         (1000, 2, 1000)]
    assert table[0]["acc.max"] == 0.99 and table[0]["status"] == "COMPLETED"
    assert requests.get(table[0]["api_url"], timeout=5).json()["run_id"] == table[0]["run_id"]
    assert table[0]["dashboard_url"] == (f"http://127.0.0.1:3000/d/trainmon-overview?var-experiment=cmp-a&"
                                         f"var-run_id={table[0]['run_id']}")
    overview = json.loads((REPO / "grafana" / "dashboards" / "training-overview.json").read_text())
    assert overview["uid"] == "trainmon-overview"
    assert {"experiment", "run_id"} <= {variable["name"] for variable in overview["templating"]["list"]}
    by_id = monitor.compare_experiments(table[1]["experiment_id"])
    assert by_id[0]["loss.last"] == 1000 and "acc.min" in by_id[0]  # keys default to every key logged
    with pytest.raises(ValueError, match="no experiment named"):
        monitor.compare_experiments("nope")


def test_log_metrics_never_touches_the_network(tmp_path: Path, api_server: ApiServer,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A slow API cannot slow the loop: every request between the run registration and finish's final status is
    made by the shipper thread (the timing side is bench/loop_impact.py)."""
    callers: list[str] = []
    original = ApiClient.request

    def recording(self: ApiClient, method: str, path: str, **kwargs: Any) -> Any:
        callers.append(threading.current_thread().name)
        return original(self, method, path, **kwargs)

    monkeypatch.setattr(ApiClient, "request", recording)
    monitor = online_monitor(tmp_path, api_server)
    assert callers[0] == "MainThread"  # the run registration, bounded by a short timeout
    del callers[0]
    for step in range(20_000):
        monitor.log_metrics({"loss": 1.0, "lr": 0.1}, step=step)
    monitor.flush()
    assert monitor.recorder.flush(30)
    assert callers and set(callers) == {"trainmon-shipper"}
    del callers[:]
    monitor.finish()
    assert callers == ["MainThread"]  # finish sends the final status itself, bounded by a short timeout
    assert len(api_server.points(monitor.run_id)) == 40_000


def test_token_is_sent_and_a_wrong_token_keeps_the_data_for_sync(tmp_path: Path) -> None:
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path)
    server.start()
    try:
        token = _create_token(server, "secured")
        if token is None:
            pytest.skip("this API build has no `trainmon token create` yet")
        monitor = online_monitor(tmp_path, server, experiment="with-token", api_token=token, project_name="secured")
        monitor.log_metrics({"loss": 1.0}, step=0)
        monitor.finish()
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{server.url}/api/runs/{monitor.run_id}", headers=headers, timeout=5).json()[
            "status"] == "COMPLETED"
        spool_dir = tmp_path / "bad-spool"
        bad = TrainingMonitor("with-token", "secured", port=False, gpu=False, system=False, handle_signals=False,
                              env={}, api_url=server.url, api_token="wrong", spool_dir=str(spool_dir))
        bad.log_metrics({"loss": 2.0}, step=0)
        bad.recorder.finish(timeout=1)  # 401: kept in the spool, not dropped
        assert requests.get(f"{server.url}/api/runs/{bad.run_id}", headers=headers, timeout=5).status_code == 404
        result = subprocess.run([sys.executable, "-m", "trainmon.client.cli", "sync", str(spool_dir), "--token",
                                 token], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stderr
        assert requests.get(f"{server.url}/api/runs/{bad.run_id}", headers=headers, timeout=5).json()[
            "status"] == "COMPLETED"
        assert server.points(bad.run_id) == [("loss", 0, 2.0)]
    finally:
        server.stop()


def _create_token(server: ApiServer, project: str) -> str | None:
    result = subprocess.run([sys.executable, "-m", "trainmon.client.cli", "token", "create", "--project", project,
                             "--scope", "write"], capture_output=True, text=True, env=server.env, cwd=server.workdir,
                            timeout=60)
    if result.returncode != 0:
        return None
    return result.stdout.strip().splitlines()[-1].split()[-1]


def test_ranks_share_one_run_and_rank0_owns_params_and_status(tmp_path: Path, api_server: ApiServer) -> None:
    run_id = f"ddp-{tmp_path.name[-12:]}".replace("_", "-")
    monitors = []
    for rank in (0, 1):
        env = {"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2",
               "TRAINMON_RUN_ID": run_id}
        monitors.append(TrainingMonitor("ddp", port=False, gpu=False, system=False, handle_signals=False, env=env,
                                        api_url=api_server.url, spool_dir=str(tmp_path / "spool")))
    for rank, monitor in enumerate(monitors):
        assert monitor.run_id == run_id
        monitor.log_params({"rank_that_wrote": rank})
        monitor.log_text("ready")
        for step in range(10):
            monitor.log_metrics({"loss": rank * 100 + step}, step=step)
    monitors[1].finish()  # COMPLETED from rank 1 does not end the run ...
    assert api_server.status(run_id) == "RUNNING"
    monitors[0].finish()  # ... rank 0's does
    run = api_server.get(f"/api/runs/{run_id}")
    assert run["status"] == "COMPLETED" and run["params"] == {"rank_that_wrote": 0}
    expected = [(0, "loss", step, float(step)) for step in range(10)]
    expected += [(1, "loss", step, 100.0 + step) for step in range(10)]  # rank 1's points: its own series of "loss"
    assert sorted(api_server.ranked_points(run_id)) == sorted(expected)
    assert api_server.get(f"/api/runs/{run_id}/metrics/loss", rank=1)["points"][3]["value"] == 103.0
    logs = api_server.get(f"/api/logs/{run['experiment_id']}", run_id=run_id)["items"]
    assert sorted(line["message"] for line in logs) == ["[rank 0] ready", "[rank 1] ready"]


def test_an_exception_in_the_with_block_marks_the_run_failed_and_resume_continues_it(
        tmp_path: Path, api_server: ApiServer) -> None:
    with pytest.raises(RuntimeError, match="diverged"), online_monitor(tmp_path, api_server) as monitor:
        monitor.log_metrics({"loss": 1.0}, step=0)
        raise RuntimeError("loss diverged")
    assert api_server.status(monitor.run_id) == "FAILED"
    with online_monitor(tmp_path, api_server, resume=monitor.run_id) as resumed:
        assert resumed.run_id == monitor.run_id
        assert api_server.status(monitor.run_id) == "RUNNING"  # a FAILED run is resumed by registering it again
        resumed.log_metrics({"loss": 0.5}, step=1)
    assert api_server.status(monitor.run_id) == "COMPLETED"
    assert sorted(api_server.points(monitor.run_id)) == [("loss", 0, 1.0), ("loss", 1, 0.5)]


def test_a_run_the_api_refuses_is_reported_once_and_training_goes_on(
        tmp_path: Path, api_server: ApiServer, caplog: pytest.LogCaptureFixture) -> None:
    with online_monitor(tmp_path, api_server) as done:
        done.log_metrics({"loss": 1.0}, step=0)
    with caplog.at_level(logging.ERROR, logger="trainmon.exporter"):
        again = online_monitor(tmp_path, api_server, resume=done.run_id)  # a COMPLETED run cannot be resumed: 409
    assert "rejected run" in caplog.text and again.recorder.shipper is None
    again.log_metrics({"loss": 2.0}, step=1)  # Prometheus side unaffected, nothing raised
    again.finish()
    assert api_server.points(done.run_id) == [("loss", 0, 1.0)] and api_server.status(done.run_id) == "COMPLETED"
