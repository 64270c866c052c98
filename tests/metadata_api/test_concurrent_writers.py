"""8 writer processes append to one SQLite file through the API at once (each also starting the app, so they
race the journal-mode switch and the migration of the fresh file too): nothing is lost, every request succeeds,
no "database is locked".

On a slow, loaded machine: the writers start together only once all of them have imported everything (so the race
is real however long imports take), wait for the write lock as long as they need (SQLITE_BUSY_TIMEOUT_MS is what
a slow disk needs, not what is checked) and the test waits for them on one deadline, reading their output as it
comes (a full pipe never stalls a writer)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from sqlalchemy import func, select
from trainmon.metadata_api.db import make_engine, read_sessions
from trainmon.metadata_api.models import IngestBatch, MetricPoint, Run

WRITERS, BATCHES, POINTS = 8, 15, 100
DEADLINE_SECONDS = 280  # under pytest's timeout (300 s), however slow the machine

WORKER = r'''
import sys, time
from pathlib import Path
from fastapi.testclient import TestClient
from trainmon.metadata_api.app import create_app
from trainmon.metadata_api.settings import Settings

url, worker, batches, size, go = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
settings = Settings(_env_file=None, database_url=url, allowed_hosts="testserver", sqlite_busy_timeout_ms=300_000)
(go.parent / f"ready-{worker}").touch()
while not go.exists():
    time.sleep(0.005)
with TestClient(create_app(settings)) as api:
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
    logs = [tmp_path / f"writer-{n}.log" for n in range(WRITERS)]
    writers = [subprocess.Popen([sys.executable, "-c", WORKER, url, str(n), str(BATCHES), str(POINTS), str(go)],
                                stdout=subprocess.DEVNULL, stderr=log.open("w")) for n, log in enumerate(logs)]
    try:
        deadline = time.monotonic() + DEADLINE_SECONDS
        while len(list(tmp_path.glob("ready-*"))) < WRITERS and time.monotonic() < deadline:
            time.sleep(0.01)
        go.touch()  # all at once
        codes = [writer.wait(timeout=max(1.0, deadline - time.monotonic())) for writer in writers]
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
                writer.wait()
    outputs = [log.read_text() for log in logs]
    assert [output for code, output in zip(codes, outputs, strict=True) if code != 0] == []
    assert not any("database is locked" in output for output in outputs)
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
