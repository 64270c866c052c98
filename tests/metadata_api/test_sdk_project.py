"""The SDK leaves `project` out when the user gave none, so a real API files the run under the token's project
(and, with no token, under its default project)."""

from __future__ import annotations

from pathlib import Path

import requests
from support.api import run_api
from trainmon.client.config import ClientConfig
from trainmon.client.recorder import RunRecorder
from trainmon.metadata_api.auth import create_token
from trainmon.metadata_api.db import make_engine, write_sessions


def record_run(api_url: str, run_id: str, spool_dir: Path, token: str | None = None) -> None:
    """What a trainer with no `project` argument does: create the run, then finish it."""
    recorder = RunRecorder(ClientConfig(api_url=api_url, api_token=token, spool_dir=spool_dir, heartbeat_interval=60),
                           experiment="projectless", run_id=run_id)
    assert recorder.finish(timeout=10)


def new_token(database_url: str, project: str) -> str:
    engine = make_engine(database_url)
    try:
        with write_sessions(engine)() as session:
            token = create_token(session, project, "write")
            session.commit()
        return token
    finally:
        engine.dispose()


def test_runs_land_in_the_tokens_project_or_the_default(database_url: str, tmp_path: Path) -> None:
    with run_api(database_url, tmp_path) as api_url:
        record_run(api_url, "open-run", tmp_path / "spool-open")
        assert requests.get(f"{api_url}/api/runs/open-run", timeout=10).json()["project"] == "default"
        token = new_token(database_url, "team-a")
        record_run(api_url, "team-run", tmp_path / "spool-team", token=token)
        answer = requests.get(f"{api_url}/api/runs/team-run", headers={"Authorization": f"Bearer {token}"},
                              timeout=10)
        assert answer.status_code == 200, answer.text
        assert (answer.json()["project"], answer.json()["status"]) == ("team-a", "COMPLETED")
