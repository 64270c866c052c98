"""Per-run limits (MAX_TAGS_PER_RUN, MAX_PARAMS_BYTES, MAX_NOTES_PER_RUN, MAX_NOTE_BYTES): going over is a 413
naming the field and the limit, and the request stores nothing; the settings table of docs/api.md lists every
setting."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from support.docs import docs_page, section, table
from trainmon.metadata_api.settings import Settings


@pytest.fixture
def limited(make_api: Callable[..., TestClient]) -> TestClient:
    api = make_api(max_tags_per_run=3, max_params_bytes=100, max_notes_per_run=2, max_note_bytes=12)
    assert api.post("/api/runs", json={"experiment": "e", "run_id": "r", "tags": {"a": "1"}}).status_code == 201
    return api


def assert_413(answer: Any, *words: str) -> None:
    assert answer.status_code == 413, answer.text
    assert all(word in answer.json()["detail"] for word in words), answer.json()


def test_tags_per_run(limited: TestClient) -> None:
    four = {f"k{i}": "v" for i in range(4)}
    assert_413(limited.post("/api/runs", json={"experiment": "e", "run_id": "n", "tags": four}), "tags:",
               "MAX_TAGS_PER_RUN=3")
    assert limited.get("/api/runs/n").status_code == 404
    assert_413(limited.post("/api/runs/r/tags", json={"tags": {"b": "2", "c": "3", "d": "4"}}),
               "tags: the run would have 4 tags", "MAX_TAGS_PER_RUN=3")
    assert_413(limited.post("/api/runs", json={"experiment": "e", "run_id": "r", "tags": {"b": "2", "c": "3",
                                                                                          "d": "4"}}), "tags:")
    assert limited.get("/api/runs/r").json()["tags"] == {"a": "1"}
    answer = limited.post("/api/runs/r/tags", json={"tags": {"a": "changed", "b": "2", "c": "3"}})
    assert answer.status_code == 200 and len(answer.json()["tags"]) == 3  # a key set again is no new tag
    assert limited.post("/api/runs/r/tags", json={"tags": {"a": "again"}}).status_code == 200


def test_params_size(limited: TestClient) -> None:
    params = {"x": "y" * 100}
    size = len(json.dumps(params, separators=(",", ":")))
    assert_413(limited.put("/api/runs/r/params", json={"params": params}), f"params: {size} bytes",
               "MAX_PARAMS_BYTES=100")
    assert_413(limited.post("/api/runs", json={"experiment": "e", "run_id": "n", "params": params}), "params:")
    assert limited.get("/api/runs/r").json()["params"] == {}
    assert limited.put("/api/runs/r/params", json={"params": {"lr": 0.1}}).json()["params"] == {"lr": 0.1}
    metadata = json.dumps(params)
    assert_413(limited.post("/api/runs/r/artifacts", files={"file": ("f.txt", b"x", "text/plain")},
                            data={"kind": "file", "name": "f.txt", "metadata": metadata}), "metadata:")
    assert limited.get("/api/runs/r/artifacts").json()["total"] == 0
    checkpoint = {"name": "c", "uri": "file:///c", "size_bytes": 1, "sha256": "0" * 64, "metrics": params}
    assert_413(limited.post("/api/runs/r/checkpoints", json=checkpoint), "metrics:", "MAX_PARAMS_BYTES=100")
    assert limited.get("/api/runs/r/checkpoints").json()["total"] == 0


def test_notes_per_run_and_note_size(limited: TestClient) -> None:
    assert_413(limited.post("/api/runs/r/notes", json={"text": "é" * 7}), "text: 14 bytes", "MAX_NOTE_BYTES=12")
    for text in ("one", "two"):
        assert limited.post("/api/runs/r/notes", json={"text": text}).status_code == 201
    assert_413(limited.post("/api/runs/r/notes", json={"text": "three"}), "notes: the run has 2 notes",
               "MAX_NOTES_PER_RUN=2")
    assert [note["text"] for note in limited.get("/api/runs/r/notes").json()["items"]] == ["one", "two"]


def test_the_limits_have_defaults_that_hold_a_real_run() -> None:
    defaults = Settings(_env_file=None)
    assert (defaults.max_tags_per_run, defaults.max_params_bytes, defaults.max_notes_per_run,
            defaults.max_note_bytes) == (1000, 1024 * 1024, 10_000, 65_536)


def test_the_api_settings_table_lists_every_setting_once() -> None:
    rows = table(section(docs_page("api"), "Settings"))
    documented = [row["variable"].strip("`") for row in rows]
    assert len(documented) == len(set(documented))
    assert set(documented) == {name.upper() for name in Settings.model_fields}
