"""Shared fixtures: real servers from tests/support/procs.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from support.procs import run_postgres, run_pushgateway


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real PostgreSQL server for the whole session (tests create their own databases or schemas)."""
    with run_postgres() as url:
        yield url


@pytest.fixture
def pushgateway_url() -> Iterator[str]:
    with run_pushgateway() as url:
        yield url
