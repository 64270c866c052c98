"""8 writer processes append to one SQLite file through the API at once (each also starting the app, so they
race the migration too): nothing is lost, every request succeeds, no "database is locked"."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select
from trainmon.metadata_api.db import make_engine, read_sessions
from trainmon.metadata_api.models import IngestBatch, MetricPoint, Run

WRITERS, BATCHES, POINTS = 8, 15, 100

WORKER = r'''
import sys, time
from pathlib import Path
from fastapi.testclient import TestClient
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings

url, worker, batches, size, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
while not go.exists():
    time.sleep(0.01)
with TestClient(create_app(Settings(_env_file=None, database_url=url, allowed_hosts="testserver"))) as api:
    def call(method, path, body):
        response = api.request(method, path, json=body)
        if response.status_code >= 300:
            sys.exit(f"{method} {path} -> {response.status_code} {response.text}")
    call("POST", "/api/runs", {"experiment": "concurrent", "run_id": "shared"})
    call("POST", "/api/runs", {"experiment": "concurrent", "run_id": f"own-{worker}"})
    for batch in range(batches):
        points = [{"key": f"w{worker}", "step": batch * size + i, "value": i * 0.5} for i in range(size)]
        for run_id in ("shared", f"own-{worker}"):
            call("POST", f"/api/runs/{run_id}/metrics", {"batch_id": f"{worker}-{batch}", "points": points})
        call("POST", f"/api/runs/own-{worker}/heartbeat", {})
        call("GET", f"/api/runs/own-{worker}", None)
'''


def test_eight_writer_processes_lose_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    go = tmp_path / "go"
    writers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(n), str(BATCHES), str(POINTS), str(go)],
                                stderr=subprocess.PIPE, text=True) for n in range(WRITERS)]
    go.touch()
    outcomes = [(writer.wait(timeout=240), writer.stderr.read()) for writer in writers]
    failures = [stderr for code, stderr in outcomes if code != 0]
    assert failures == []
    assert not any("database is locked" in stderr for _, stderr in outcomes)
    engine = make_engine(url)
    try:
        with read_sessions(engine)() as session:
            rows = session.execute(select(Run.id, func.count()).select_from(MetricPoint)
                                   .join(Run, Run.key == MetricPoint.run_key).group_by(Run.id))
            per_run = {run_id: count for run_id, count in rows}
            batches = session.scalar(select(func.count()).select_from(IngestBatch))
    finally:
        engine.dispose()
    assert per_run == {"shared": WRITERS * BATCHES * POINTS,
                       **{f"own-{n}": BATCHES * POINTS for n in range(WRITERS)}}
    assert batches == 2 * WRITERS * BATCHES
