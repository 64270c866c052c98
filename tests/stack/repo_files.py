"""Paths of the stack's config files in this repository, and YAML loading shared by the stack tests."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

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


def alertmanager_renderer() -> ModuleType:
    """alertmanager/render.py as a module: the same code docker-compose runs before Alertmanager starts."""
    spec = importlib.util.spec_from_file_location("trainmon_alertmanager_render", ALERTMANAGER_DIR / "render.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
