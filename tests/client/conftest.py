"""Fixtures of the SDK tests: the real metadata API (see apiserver.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from apiserver import ApiServer


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ApiServer]:
    pytest.importorskip("fastapi", reason="the metadata API needs the [server] extra")
    server = ApiServer(tmp_path)
    server.start()
    yield server
    server.stop()
