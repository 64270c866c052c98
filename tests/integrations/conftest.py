"""Fixtures of the framework integration tests: the real metadata API on SQLite, one for the session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from integration_support import Api, require
from support.api import run_api


@pytest.fixture(scope="session")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    require("fastapi")
    workdir = tmp_path_factory.mktemp("integrations-api")
    with run_api(f"sqlite:///{workdir / 'trainmon.db'}", workdir, HEARTBEAT_TIMEOUT_SECONDS="300",
                 ARTIFACT_ROOT=str(workdir / "artifacts")) as url:
        yield Api(url)
