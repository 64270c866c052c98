"""Paths of the stack's config files in this repository, and YAML loading shared by the stack tests."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from devtools.stack_render import alertmanager_renderer  # noqa: F401 - re-exported for the tests

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
RULE_TESTS_DIR = PROMETHEUS_DIR / "tests"
ALERTMANAGER_DIR = REPO / "alertmanager"
GRAFANA_DIR = REPO / "grafana"


def load_yaml(path: Path) -> Any:
    with open(path) as handle:
        return yaml.safe_load(handle)


def rule_groups() -> list[dict]:
    """Every rule group of every file under prometheus/rules/, each with its `file` added."""
    groups = []
    for path in sorted(RULES_DIR.glob("*.yml")):
        for group in load_yaml(path)["groups"]:
            groups.append({**group, "file": path.name})
    return groups


def alerting_rules() -> list[dict]:
    return [rule for group in rule_groups() for rule in group["rules"] if "alert" in rule]


def dashboard_generator() -> ModuleType:
    """grafana/dashboards/generate.py as a module (what `make dashboards` runs)."""
    spec = importlib.util.spec_from_file_location("trainmon_dashboard_generate",
                                                  GRAFANA_DIR / "dashboards" / "generate.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def dashboards() -> dict[str, dict]:
    """The committed dashboard JSON files by file name."""
    return {path.name: json.loads(path.read_text()) for path in sorted((GRAFANA_DIR / "dashboards").glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    """Every panel of a dashboard, rows' nested panels included."""
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found
