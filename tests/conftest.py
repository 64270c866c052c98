"""Shared fixtures: real servers from tests/support/procs.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support.procs import run_postgres, run_pushgateway


@pytest.fixture(autouse=True)
def _own_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own temporary working directory: a monitor given no API URL records its run in
    ./trainmon-runs (and checkpoints in ./experiments), which must never land in the checkout."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the whole session (tests create their own databases or schemas)."""
    with run_postgres() as url:
        yield url


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    with run_pushgateway() as url:
        yield url
