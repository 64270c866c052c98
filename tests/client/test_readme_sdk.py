"""The SDK example of docs/sdk.md ("Recording the whole run") runs as written against the real metadata API."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from apiserver import ApiServer, python_env, require_torch
from support.docs import code_blocks, docs_page, section

pytestmark = pytest.mark.integration


def docs_sdk_example() -> str:
    blocks = code_blocks(section(docs_page("sdk"), "Recording the whole run"), "python")
    assert blocks, "docs/sdk.md's 'Recording the whole run' section has no python example"
    return blocks[0]


def test_docs_sdk_example_runs_as_written(tmp_path: Path, api_server: ApiServer) -> None:
    require_torch()
    script = tmp_path / "train.py"
    script.write_text(docs_sdk_example())
    env = python_env(TRAINMON_API_URL=api_server.url, TRAINMON_PORT="0", TRAINMON_GPU="false",
                     TRAINMON_SPOOL_DIR=str(tmp_path / "spool"))
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    (experiment,) = [e for e in api_server.get("/api/experiments")["items"] if e["name"] == "mlp-synthetic"]
    (run,) = api_server.get(f"/api/experiments/{experiment['id']}")["runs"]
    assert run["status"] == "COMPLETED" and run["tags"] == {"dataset": "synthetic", "stage": "baseline"}
    assert run["params"] == {"lr": 0.1, "model": {"hidden": 32}, "optimizer": "sgd", "batch_size": 64}
    printed = result.stdout.split()
    assert printed[0] == run["run_id"] and printed[1] == "COMPLETED"
    assert len(api_server.points(run["run_id"])) == 300
    checkpoints = sorted((tmp_path / "experiments" / str(experiment["id"]) / "checkpoints" / run["run_id"]
                          / "rank0").iterdir())
    assert [path.name for path in checkpoints] == ["checkpoint-step000000199.pt", "checkpoint-step000000299.pt"]
    with sqlite3.connect(api_server.db_path) as db:
        of_run = "run_key = (SELECT key FROM runs WHERE id = ?)"  # rows reference the run's internal key
        kinds = [kind for (kind,) in db.execute(f"SELECT kind FROM artifacts WHERE {of_run}", (run["run_id"],))]
        logs = [m for (m,) in db.execute(f"SELECT message FROM log_lines WHERE {of_run}", (run["run_id"],))]
    onnx = ["file"] if importlib.util.find_spec("onnx") else []  # log_graph's ONNX export
    assert sorted(kinds) == onnx + ["graph"] + ["histogram"] * 3 + ["image"] * 3
    assert "epoch 2 done" in logs
