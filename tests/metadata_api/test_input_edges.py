"""Nothing lost at the edges, nothing let in: on SQLite and PostgreSQL, no input is a 500. NUL characters and
lone surrogates in any text, integers beyond their column, booleans or fractions where an integer is due, bodies
that are not UTF-8, keys over MAX_KEY_LENGTH: each a clear error naming the field (422 in FastAPI's list shape; 400
for a body that is not UTF-8), with nothing written. The OpenAPI document states the same bounds.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker
from trainmon.common.naming import MAX_KEY_LENGTH
from trainmon.metadata_api.db import UnstorableText
from trainmon.metadata_api.models import Run
from trainmon.metadata_api.schemas import INT32_MAX, INT64_MAX, MAX_STEP

NUL = "a\x00b"
SURROGATE = "a\ud800b"
SHA = "0" * 64


@pytest.fixture
def run(api: TestClient) -> TestClient:
    assert api.post("/api/runs", json={"experiment": "e", "run_id": "r"}).status_code == 201
    return api


def send(api: TestClient, method: str, path: str, body: Any = None) -> Any:
    """`body` as JSON text, escaped (so that lone surrogates travel as the `\\ud800` escapes a client may send)."""
    if body is None:
        return api.request(method, path)
    return api.request(method, path, content=json.dumps(body).encode(), headers={"content-type": "application/json"})


def assert_422(answer: Any, field: str) -> None:
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert isinstance(detail, list) and detail, detail
    assert any(field in [str(part) for part in error["loc"]] for error in detail), detail


def text_cases(text: str) -> list[tuple[str, str, str, Any]]:
    """(field, method, path, body) of every text a client sends, with `text` in it."""
    create = {"experiment": "e", "run_id": "new"}
    line = {"time": "2024-01-01T00:00:00Z", "message": "m"}
    checkpoint = {"name": "c", "uri": "file:///c", "size_bytes": 1, "sha256": SHA}
    return [
        ("experiment", "POST", "/api/runs", {**create, "experiment": text}),
        ("project", "POST", "/api/runs", {**create, "project": text}),
        ("run_id", "POST", "/api/runs", {**create, "run_id": text}),
        ("host", "POST", "/api/runs", {**create, "host": text}),
        ("command", "POST", "/api/runs", {**create, "command": text}),
        ("git_commit", "POST", "/api/runs", {**create, "git_commit": text}),
        ("exporter_url", "POST", "/api/runs", {**create, "exporter_url": f"http://127.0.0.1:9/{text}"}),
        ("params", "POST", "/api/runs", {**create, "params": {text: 1}}),
        ("params", "POST", "/api/runs", {**create, "params": {"lr": {"schedule": [1, text]}}}),
        ("tags", "POST", "/api/runs", {**create, "tags": {text: "v"}}),
        ("tags", "POST", "/api/runs", {**create, "tags": {"k": text}}),
        ("params", "PUT", "/api/runs/r/params", {"params": {"a": text}}),
        ("tags", "POST", "/api/runs/r/tags", {"tags": {"k": text}}),
        ("text", "POST", "/api/runs/r/notes", {"text": text}),
        ("batch_id", "POST", "/api/runs/r/logs", {"batch_id": text, "lines": [line]}),
        ("message", "POST", "/api/runs/r/logs", {"batch_id": "b", "lines": [{**line, "message": text}]}),
        ("batch_id", "POST", "/api/runs/r/metrics", {"batch_id": text, "points": [{"key": "k", "step": 0,
                                                                                   "value": 1}]}),
        ("name", "POST", "/api/runs/r/checkpoints", {**checkpoint, "name": text}),
        ("uri", "POST", "/api/runs/r/checkpoints", {**checkpoint, "uri": text}),
        ("metrics", "POST", "/api/runs/r/checkpoints", {**checkpoint, "metrics": {"loss": text}}),
        ("run_id", "GET", "/api/runs/a%00b", None),
        ("project", "GET", "/api/runs/r?project=a%00b", None),
        ("runs", "GET", "/api/compare?keys=loss&runs=a%00b", None),
        ("run_id", "GET", "/api/metrics/1?run_id=a%00b", None),
    ]


@pytest.mark.parametrize("case", range(len(text_cases(NUL))))
def test_nul_in_any_text_is_a_422_naming_the_field_and_writes_nothing(run: TestClient, case: int) -> None:
    field, method, path, body = text_cases(NUL)[case]
    assert_422(send(run, method, path, body), field)
    shown = run.get("/api/runs/r").json()
    assert (shown["params"], shown["tags"]) == ({}, {})
    assert run.get("/api/runs/new").status_code == 404
    assert run.get("/api/runs/r/notes").json()["total"] == 0


@pytest.mark.parametrize("case", [i for i, (_, method, _, _) in enumerate(text_cases(SURROGATE)) if method != "GET"])
def test_a_lone_surrogate_in_any_text_is_a_422(run: TestClient, case: int) -> None:
    field, method, path, body = text_cases(SURROGATE)[case]
    answer = send(run, method, path, body)
    if path.endswith(("/metrics", "/logs")):  # the ingest paths' JSON parser (pydantic-core) refuses the escape
        assert answer.status_code == 422 and answer.json()["detail"][0]["type"] == "json_invalid", answer.text
        return
    assert_422(answer, field)


def test_the_database_refuses_text_it_cannot_store_whichever_route_passed_it(
        run: TestClient, session_factory: sessionmaker[Session]) -> None:
    """The backstop behind the schemas (a route, a page, that took a text unchecked): a 422, never a 500."""
    for text in (NUL, SURROGATE):
        with session_factory() as session, pytest.raises(UnstorableText):
            session.execute(select(Run).where(Run.id == text))
    assert_422(run.get("/runs/a%00b"), "request")  # a dashboard page that looks the run up


def test_nul_in_artifact_form_fields_is_a_422(run: TestClient) -> None:
    files = {"file": ("f.txt", b"x", "text/plain")}
    assert_422(run.post("/api/runs/r/artifacts", files=files, data={"kind": "file", "name": NUL}), "name")
    answer = run.post("/api/runs/r/artifacts", files=files,
                      data={"kind": "file", "name": "f.txt", "metadata": json.dumps({"a": NUL})})
    assert_422(answer, "metadata")
    for metadata in ("[1]", "{", "[" * 5000 + "]" * 5000):  # not an object, not JSON, too deep for the parser
        assert_422(run.post("/api/runs/r/artifacts", files=files,
                            data={"kind": "file", "name": "f.txt", "metadata": metadata}), "metadata")
    assert run.get("/api/runs/r/artifacts").json()["total"] == 0


def test_integers_are_bounded_by_their_column(run: TestClient) -> None:
    for field in ("pid", "rank", "world_size"):
        assert_422(send(run, "POST", "/api/runs", {"experiment": "e", "run_id": "n", field: INT64_MAX + 1}), field)
    big = {"experiment": "e", "run_id": "big", "pid": INT64_MAX, "rank": 2**40, "world_size": INT64_MAX}
    answer = send(run, "POST", "/api/runs", big)  # BIGINT on PostgreSQL too
    assert answer.status_code == 201, answer.text
    assert (answer.json()["pid"], answer.json()["rank"]) == (INT64_MAX, 2**40)
    checkpoint = {"name": "c", "uri": "file:///c", "size_bytes": 1, "sha256": SHA}
    for field in ("step", "epoch", "size_bytes"):
        assert_422(send(run, "POST", "/api/runs/r/checkpoints", {**checkpoint, field: INT64_MAX + 1}), field)
        assert_422(send(run, "POST", "/api/runs/r/checkpoints", {**checkpoint, field: -1}), field)
    stored = send(run, "POST", "/api/runs/r/checkpoints", {**checkpoint, "epoch": INT64_MAX, "size_bytes": INT64_MAX})
    assert stored.status_code == 201, stored.text
    point = {"key": "k", "step": MAX_STEP + 1, "value": 1}
    assert_422(send(run, "POST", "/api/runs/r/metrics", {"batch_id": "b", "points": [point]}), "step")


def test_booleans_and_fractions_are_no_integers(run: TestClient) -> None:
    checkpoint = {"name": "c", "uri": "file:///c", "size_bytes": 1, "sha256": SHA}
    for value in (False, True, 1.0, "1"):
        assert_422(send(run, "POST", "/api/runs/r/checkpoints", {**checkpoint, "size_bytes": value}), "size_bytes")
        assert_422(send(run, "POST", "/api/runs", {"experiment": "e", "run_id": "n", "pid": value}), "pid")
        point = {"key": "k", "step": value, "value": 1}
        assert_422(send(run, "POST", "/api/runs/r/metrics", {"batch_id": "b", "points": [point]}), "step")
    point = {"key": "k", "step": 1, "value": 1, "wall_time": True}
    assert_422(send(run, "POST", "/api/runs/r/metrics", {"batch_id": "b", "points": [point]}), "wall_time")
    assert run.get("/api/runs/r/checkpoints").json()["total"] == 0
    assert run.get("/api/runs/n").status_code == 404


@pytest.mark.parametrize(("path", "field"), [
    (f"/api/experiments?offset={INT64_MAX + 1}", "offset"),
    (f"/api/experiments/{INT32_MAX + 1}", "experiment_id"),
    (f"/api/experiments/{2**64}", "experiment_id"),
    (f"/api/logs/1?offset={2**64}", "offset"),
    (f"/api/runs/r/metrics/k?after_step={MAX_STEP + 1}", "after_step"),
    (f"/api/runs/r/artifacts/{INT32_MAX + 1}/file", "artifact_id"),
    (f"/api/compare?keys=k&experiments={INT32_MAX + 1}", "experiments"),
])
def test_integer_parameters_are_bounded(run: TestClient, path: str, field: str) -> None:
    assert_422(run.get(path), field)


def test_the_largest_integers_allowed_are_served(run: TestClient) -> None:
    assert run.get(f"/api/experiments?offset={INT64_MAX}").json()["items"] == []
    assert run.get(f"/api/experiments/{INT32_MAX}").status_code == 404
    assert run.get(f"/api/runs/r/notes?offset={INT64_MAX}").json()["items"] == []


def test_a_body_that_is_not_utf8_is_a_400(run: TestClient) -> None:
    headers = {"content-type": "application/json"}
    for path in ("/api/runs", "/api/runs/r/metrics", "/api/runs/r/logs", "/api/runs/r/notes"):
        answer = run.post(path, content=b'{"experiment": "\xff\xfe", "batch_id": "\xff"}', headers=headers)
        assert answer.status_code == 400, (path, answer.text)
        assert answer.json() == {"detail": "There was an error parsing the body"}


def test_json_that_python_reads_but_no_column_holds_is_a_422(run: TestClient) -> None:
    headers = {"content-type": "application/json"}
    answer = run.post("/api/runs", content=b'{"experiment": "e", "pid": NaN}', headers=headers)
    assert_422(answer, "pid")  # and the answer (echoing NaN) is JSON
    deep: Any = 1
    for _ in range(65):
        deep = {"a": deep}
    assert_422(send(run, "PUT", "/api/runs/r/params", {"params": deep}), "params")
    line = {"time": "9999-12-31T23:00:00-05:00", "message": "m"}  # after the last UTC datetime
    assert_422(send(run, "POST", "/api/runs/r/logs", {"batch_id": "b", "lines": [line]}), "time")


def test_metric_keys_follow_the_one_length_rule(run: TestClient) -> None:
    longest, too_long = "k" * MAX_KEY_LENGTH, "k" * (MAX_KEY_LENGTH + 1)
    points = [{"key": longest, "step": 0, "value": 1.0}]
    assert send(run, "POST", "/api/runs/r/metrics", {"batch_id": "b1", "points": points}).status_code == 200
    assert run.get(f"/api/runs/r/metrics/{longest}").status_code == 200
    points = [{"key": too_long, "step": 0, "value": 1.0}]
    assert_422(send(run, "POST", "/api/runs/r/metrics", {"batch_id": "b2", "points": points}), "key")
    assert_422(run.get(f"/api/runs/r/metrics/{too_long}"), "key")
    document = run.get("/openapi.json").json()
    point = document["paths"]["/api/runs/{run_id}/metrics"]["post"]["requestBody"]["content"]["application/json"]
    assert point["schema"]["properties"]["points"]["items"]["properties"]["key"]["maxLength"] == MAX_KEY_LENGTH


def test_checks_a_route_makes_itself_are_422s_in_the_list_shape(run: TestClient) -> None:
    assert_422(run.get("/api/compare?keys=k"), "runs")
    assert_422(run.get("/api/compare?keys=!!!&runs=r"), "keys")
    assert_422(run.get("/api/runs/r/metrics/k?max_points=10&after_step=1"), "max_points")


def _schemas(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(where, schema) of every parameter and request-body property, $refs followed, unions opened."""
    components = document["components"]["schemas"]
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(where: str, schema: dict[str, Any], seen: frozenset[str]) -> None:
        reference = schema.get("$ref", "")
        if reference:
            name = reference.rsplit("/", 1)[-1]
            if name not in seen:
                walk(where, components[name], seen | {name})
            return
        for union in ("anyOf", "oneOf", "allOf"):
            for member in schema.get(union, []):
                walk(where, member, seen)
        found.append((where, schema))
        for name, item in schema.get("properties", {}).items():
            walk(f"{where}.{name}", item, seen)
        for key in ("items", "additionalProperties"):
            if isinstance(schema.get(key), dict):
                walk(f"{where}[]", schema[key], seen)

    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                walk(f"{method} {path} {parameter['name']}", parameter["schema"], frozenset())
            for media in operation.get("requestBody", {}).get("content", {}).values():
                walk(f"{method} {path} body", media.get("schema", {}), frozenset())
    return found


def test_the_openapi_document_states_every_bound(api: TestClient) -> None:
    """Every integer a client sends has a minimum and a maximum; every string (but a file or one of a fixed set of
    values) a length limit and a pattern."""
    schemas = _schemas(api.get("/openapi.json").json())
    integers = [(where, s) for where, s in schemas if s.get("type") == "integer"]
    strings = [(where, s) for where, s in schemas if s.get("type") == "string"]
    assert len(integers) > 20 and len(strings) > 30
    assert [where for where, s in integers if "minimum" not in s or "maximum" not in s] == []
    assert [where for where, s in integers if s["maximum"] > INT64_MAX] == []
    texts = [(where, s) for where, s in strings if not ({"enum", "const", "format", "contentMediaType"} & set(s))]
    assert [where for where, s in texts if "pattern" not in s] == []
    assert [where for where, s in texts if "maxLength" not in s] == []


def test_a_422_some_route_raises_as_a_string_gets_the_list_shape() -> None:
    from fastapi import FastAPI, HTTPException
    from trainmon.metadata_api import errors

    app = FastAPI()
    app.add_exception_handler(HTTPException, errors.http_error)

    @app.get("/field")
    def field() -> None:
        raise HTTPException(422, "file: sha256 mismatch")

    @app.get("/other")
    def other() -> None:
        raise HTTPException(404, "run_id: no run 'x'")

    client = TestClient(app)
    assert client.get("/field").json() == {"detail": [{"type": "value_error", "loc": ["file"],
                                                       "msg": "sha256 mismatch"}]}
    assert client.get("/other").json() == {"detail": "run_id: no run 'x'"}
