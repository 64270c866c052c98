"""``compare_experiments``: last/min/max per key for every run of some experiments, from the metadata API.

The values are exact: the API's ``max_points`` view is an M4 reduction, which keeps every bucket's first, last,
minimum and maximum point, so the series' last value and extremes survive it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import quote

from trainmon.common.wire import from_json_value

from .api_client import ApiClient

OVERVIEW_DASHBOARD_UID = "trainmon-overview"  # grafana/dashboards/training-overview.dashboard.py


def compare_experiments(client: ApiClient, names_or_ids: Iterable[str | int] | str | int,
                        keys: Sequence[str] | None, grafana_url: str) -> list[dict[str, Any]]:
    """Rows of last/min/max per key for every run of the experiments (exact: the M4 view keeps extremes and last)."""
    if isinstance(names_or_ids, (str, int)):
        names_or_ids = [names_or_ids]
    wanted = list(names_or_ids)
    ids = _experiment_ids(client, wanted)
    rows: list[dict[str, Any]] = []
    for experiment_id in ids:
        experiment = client.get_experiment(experiment_id)
        experiment_keys = list(keys) if keys else _experiment_keys(client, experiment_id)
        for run in experiment.get("runs", []):
            row: dict[str, Any] = {
                "experiment": experiment["name"], "experiment_id": experiment_id, "run_id": run["run_id"],
                "status": run["status"], "params": run.get("params", {}),
                "api_url": f"{client.base_url}/api/runs/{quote(run['run_id'], safe='')}",
                "dashboard_url": f"{grafana_url.rstrip('/')}/d/{OVERVIEW_DASHBOARD_UID}?"
                                 f"var-experiment={quote(experiment['name'])}&var-run_id={quote(run['run_id'])}",
            }
            for key in experiment_keys:
                row.update(_key_summary(client, run["run_id"], key))
            rows.append(row)
    return rows


def _experiment_ids(client: ApiClient, wanted: list[str | int]) -> list[int]:
    by_name: dict[str, int] = {}
    if any(not _is_int(item) for item in wanted):
        offset = 0
        while True:
            page = client.get_experiments(limit=500, offset=offset)
            for item in page["items"]:
                by_name.setdefault(item["name"], item["id"])
            offset += len(page["items"])
            if not page["items"] or offset >= page["total"]:
                break
    ids = []
    for item in wanted:
        if _is_int(item):
            ids.append(int(item))
        elif item in by_name:
            ids.append(by_name[str(item)])
        else:
            raise ValueError(f"no experiment named {item!r}")
    return ids


def _experiment_keys(client: ApiClient, experiment_id: int) -> list[str]:
    answer = client.request("GET", f"/api/metrics/{experiment_id}", params={"limit": 1})
    return list(answer.get("keys", [])) if isinstance(answer, dict) else []


def _key_summary(client: ApiClient, run_id: str, key: str) -> dict[str, Any]:
    answer = client.get_metric(run_id, key, max_points=2000)
    points = answer.get("points", answer) if isinstance(answer, dict) else answer
    values = [(point["step"], from_json_value(point["value"])) for point in points or []]
    finite = [value for _step, value in values if value == value]
    last = max(values)[1] if values else None
    return {f"{key}.last": last, f"{key}.min": min(finite) if finite else None,
            f"{key}.max": max(finite) if finite else None}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) or (isinstance(value, str) and value.isdigit())
