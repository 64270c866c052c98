"""The dashboard's server side on SQLite and PostgreSQL: the runs table's filters and sorts in SQL (JSON params,
metric values from the block summaries), the run keys, the run log, the event stream, the pages' status codes.
The pages in a real browser are tests/web/."""

from __future__ import annotations

import json
import re

import pytest
from fastapi.testclient import TestClient

RUNS = {  # run id -> (params, last val_loss, min val_loss)
    "a": ({"lr": 0.01, "opt": {"name": "sgd"}, "tag": "x"}, 0.5, 0.4),
    "b": ({"lr": 0.001, "opt": {"name": "adam"}, "tag": 3}, 0.2, 0.2),
    "c": ({"lr": "auto", "opt": {"name": "adam"}}, 0.9, 0.1),
}


@pytest.fixture
def seeded(api: TestClient) -> TestClient:
    for run_id, (params, last, low) in RUNS.items():
        answer = api.post("/api/runs", json={"experiment": "e", "run_id": run_id, "params": params,
                                             "tags": {"group": "g1" if run_id != "c" else "g2"}})
        assert answer.status_code == 201, answer.text
        points = [{"key": "val_loss", "step": step, "value": value}
                  for step, value in ((0, 1.0), (100, low), (200, last))]
        points.append({"key": "train_loss", "step": 5, "value": "NaN" if run_id == "a" else 1.0})
        assert api.post(f"/api/runs/{run_id}/metrics", json={"batch_id": "1", "points": points}).status_code == 200
    return api


def rows(api: TestClient, query: str) -> list[str]:
    answer = api.get(f"/?{query}")
    assert answer.status_code == 200, answer.text
    return re.findall(r'<tr data-run-id="([^"]+)"', answer.text)


@pytest.mark.parametrize(("query", "expected"), [
    ("where=lr < 0.005", ["b"]),  # a text param ("auto") never matches a number, never fails a cast
    ("where=params.lr >= 0.001", ["b", "a"]),
    ("where=opt.name = adam", ["c", "b"]),
    ("where=tag != x", ["b"]),
    ("where=val_loss <= 0.5", ["b", "a"]),  # the last value
    ("where=val_loss.min < 0.15", ["c"]),
    ("where=metrics.val_loss.max > 0.95 and lr > 0.005", ["a"]),
    ("tag=group=g1&status=RUNNING", ["b", "a"]),
    ("tag=group=g2", ["c"]),
    ("q=B", ["b"]),
    ("sort=param:lr&order=asc", ["b", "a", "c"]),  # numbers first, then text
    ("sort=metric:val_loss&order=asc", ["b", "a", "c"]),
    ("sort=metric:val_loss.min&order=desc", ["a", "b", "c"]),
    ("sort=duration&order=asc", ["c", "b", "a"]),
    ("sort=run&order=desc", ["c", "b", "a"]),
])
def test_runs_table_filters_and_sorts_in_sql(seeded: TestClient, query: str, expected: list[str]) -> None:
    assert rows(seeded, query) == expected


def test_runs_table_cells_show_last_and_min(seeded: TestClient) -> None:
    page = seeded.get("/?metrics=val_loss,train_loss&params=lr,opt.name").text
    row = page.split('<tr data-run-id="a">')[1].split("</tr>")[0]
    assert re.findall(r'data-metric="val_loss" data-agg="(last|min)">([^<]*)<', row) == [("last", "0.5"),
                                                                                            ("min", "0.4")]
    assert '<td class="num">sgd</td>' in row and '<td class="num">0.01</td>' in row
    assert re.findall(r'data-metric="train_loss" data-agg="last">([^<]*)<', row) == ["NaN"]


def test_a_bad_query_is_explained_not_a_500(seeded: TestClient) -> None:
    for query in ("where=lr ~ 3", "sort=nope", "status=DONE", "page=0", "where=val_loss.min = abc"):
        answer = seeded.get(f"/?{query}")
        assert answer.status_code == 200 and 'class="error"' in answer.text, query


def test_keys_logs_and_pages(seeded: TestClient) -> None:
    assert seeded.get("/api/runs/a/keys").json()["keys"] == ["train_loss", "val_loss"]
    lines = [{"time": f"2025-01-01T00:00:0{i}Z", "level": level, "message": f"line {i} {level}"}
             for i, level in enumerate(["INFO", "WARNING", "ERROR", "INFO"])]
    assert seeded.post("/api/runs/a/logs", json={"batch_id": "l", "lines": lines}).status_code == 200
    warnings = seeded.get("/api/runs/a/logs", params={"level": "WARNING"}).json()["items"]
    assert [line["message"] for line in warnings] == ["line 1 WARNING", "line 2 ERROR"]
    assert [line["message"] for line in seeded.get("/api/runs/a/logs", params={"q": "error"}).json()["items"]] == \
        ["line 2 ERROR"]
    tail = seeded.get("/api/runs/a/logs", params={"tail": "true", "limit": 2}).json()["items"]
    assert [line["message"] for line in tail] == ["line 2 ERROR", "line 3 INFO"]
    after = seeded.get("/api/runs/a/logs", params={"after_id": tail[0]["id"]}).json()["items"]
    assert [line["message"] for line in after] == ["line 3 INFO"]
    for path in ("/", "/runs/a", "/compare?runs=a,b,c", "/login"):
        answer = seeded.get(path)
        assert answer.status_code == 200 and answer.headers["server-timing"].startswith("app;dur="), path
    assert seeded.get("/runs/zz").status_code == 404
    assert seeded.get("/compare?runs=a,zz").status_code == 404


def test_the_event_stream_sends_new_points_logs_and_status(seeded: TestClient) -> None:
    page = seeded.get("/runs/b").text
    cursor = re.search(r'"cursor": "([0-9.]+)"', page)[1]
    assert seeded.post("/api/runs/b/metrics", json={"batch_id": "2", "points": [
        {"key": "val_loss", "step": 300, "value": "Infinity"}, {"key": "acc", "step": 300, "value": 0.7}]}
                       ).status_code == 200
    assert seeded.post("/api/runs/b/logs", json={"batch_id": "l", "lines": [
        {"time": "2025-01-01T00:00:00Z", "level": "INFO", "message": "hello"}]}).status_code == 200
    assert seeded.post("/api/runs/b/status", json={"status": "COMPLETED"}).status_code == 200
    events = {}
    with seeded.stream("GET", "/api/runs/b/events", params={"cursor": cursor}) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for block in _blocks(stream.iter_lines()):
            events[block["event"]] = block
            if {"points", "logs", "status"} <= set(events):
                break
    series = json.loads(events["points"]["data"])["series"]
    assert series == {"val_loss": [[300, "Infinity", series["val_loss"][0][2]]],
                      "acc": [[300, 0.7, series["acc"][0][2]]]}
    assert json.loads(events["logs"]["data"])["lines"][0]["message"] == "hello"
    assert json.loads(events["status"]["data"])["status"] == "COMPLETED"
    point_id, log_id = (int(part) for part in events["status"]["id"].split("."))
    assert point_id > int(cursor.split(".")[0]) and log_id > 0


def _blocks(lines):  # noqa: ANN001, ANN202 - server-sent events, one dict per event
    block: dict[str, str] = {}
    for line in lines:
        if not line:
            if "event" in block:
                yield block
            block = {}
            continue
        name, _, value = line.partition(": ")
        if name in ("event", "data", "id"):
            block[name] = value


def test_run_page_links_to_prometheus_and_grafana_when_configured(seeded: TestClient,
                                                                  make_api) -> None:  # noqa: ANN001
    assert "Prometheus</a>" not in seeded.get("/runs/a").text
    linked = make_api(prometheus_url="http://prom.example:9090/", grafana_url="http://grafana.example")
    page = linked.get("/runs/a").text
    assert ('href="http://prom.example:9090/graph?g0.expr=trainmon_metric_value%7Brun_id%3D%22a%22%7D'
            in page.replace("&amp;", "&"))
    grafana = "http://grafana.example/d/trainmon-overview/training-overview?var-experiment=e&var-run_id=a"
    assert f'href="{grafana}"' in page.replace("&amp;", "&")


def test_chart_data_is_gzipped_and_nothing_else(seeded: TestClient) -> None:
    points = [{"key": "wide", "step": step, "value": step * 0.001} for step in range(3000)]
    assert seeded.post("/api/runs/a/metrics", json={"batch_id": "w", "points": points}).status_code == 200
    reduced = seeded.get("/api/runs/a/metrics/wide", params={"max_points": 2000}, headers={"Accept-Encoding": "gzip"})
    assert reduced.headers.get("content-encoding") == "gzip" and len(reduced.json()["points"]) <= 2000
    page = seeded.get("/api/runs/a/metrics/wide", params={"limit": 3000}, headers={"Accept-Encoding": "gzip"})
    assert "content-encoding" not in page.headers  # full-fidelity pages are left alone
