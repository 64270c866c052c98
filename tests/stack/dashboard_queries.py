"""Run the dashboards' queries the way Grafana would: variables substituted, against a real Prometheus (and the
metadata DB for SQL panels). Shared by test_dashboards_data.py (one Prometheus) and test_federation.py (global
Prometheus servers, per cluster)."""

from __future__ import annotations

import math
import re
import time

import psycopg
import requests
from repo_files import panels
from support.procs import Prometheus

# What Grafana would substitute for its built-in interval variables with a 1 s scrape interval.
BUILTINS = {"__rate_interval": "4s", "__interval": "1s", "__range": "120s"}
ALL = ".*"  # the dashboards' allValue: what "All" (a variable's value None here) becomes


def substitute(query: str, variables: dict[str, list[str] | None], multi: set[str], sql: bool) -> str:
    """Grafana's variable interpolation for the cases the dashboards use ($var, ${var}, built-ins, All)."""
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        values = variables[name]
        if values is None:
            return ALL
        if sql:
            return ",".join(f"'{v}'" for v in values) if name in multi else values[0]
        return "|".join(re.escape(v) for v in values) if len(values) > 1 else values[0]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, query)


def has_value(result: list[dict]) -> bool:
    for series in result:
        samples = series.get("values") or [series.get("value")]
        if any(sample and not math.isnan(float(sample[1])) for sample in samples):
            return True
    return False


def label_values(prometheus: Prometheus, query: str) -> set[str]:
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
    assert match, f"unsupported variable query {query!r}"
    answer = requests.get(f"{prometheus.url}/api/v1/series", params={"match[]": match.group(1)}, timeout=10).json()
    return {series[match.group(2)] for series in answer["data"] if match.group(2) in series}


def multi_variables(board: dict) -> set[str]:
    return {v["name"] for v in board["templating"]["list"] if v.get("multi") or v.get("includeAll")}


def run_target(target: dict, board: dict, prometheus: Prometheus, variables: dict[str, list[str] | None],
               start: float, database_url: str | None = None) -> tuple[str, list]:
    """One panel target's query as sent, and its rows (SQL) or Prometheus result (instant at now, or range)."""
    multi = multi_variables(board)
    if target.get("rawSql"):
        query = substitute(target["rawSql"], variables, multi, sql=True)
        assert database_url, "a SQL target needs the metadata DB"
        with psycopg.connect(database_url.replace("+psycopg", "")) as connection:
            return query, connection.execute(query).fetchall()
    query = substitute(target["expr"], variables, multi, sql=False)
    if target.get("instant"):
        return query, prometheus.query(query, at=time.time())
    return query, prometheus.query_range(query, start, time.time(), step=1)


def query_gaps(board: dict, prometheus: Prometheus, variables: dict[str, list[str] | None], start: float,
               database_url: str | None = None) -> list[str]:
    """Every variable query that misses a selected value, and every panel query without data. Without
    `database_url` the SQL panels (the metadata DB, which federation does not concern) are left out."""
    multi = multi_variables(board)
    missing = []
    for variable in board["templating"]["list"]:
        query = substitute(variable["query"], variables, multi, sql=False)
        found = label_values(prometheus, query)
        wanted = variables[variable["name"]]
        if wanted is not None and not set(wanted) <= found:
            missing.append(f"variable {variable['name']}: {query} -> {sorted(found)}")
    for panel in panels(board):
        for target in panel.get("targets", []):
            if target.get("rawSql") and database_url is None:
                continue
            query, result = run_target(target, board, prometheus, variables, start, database_url)
            if not (bool(result) if target.get("rawSql") else has_value(result)):
                missing.append(f"panel {panel['title']!r} {target['refId']}: {query}")
    return missing


def panel_titled(board: dict, title: str) -> dict:
    [panel] = [panel for panel in panels(board) if panel.get("title") == title]
    return panel
