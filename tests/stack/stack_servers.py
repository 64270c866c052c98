"""The repository's stack configs rendered for tests (hosts, ports, intervals only), and a JSON POST to the API.

Nothing here forks a config: each function loads the file docker-compose.yml mounts, checks the jobs/receivers it
expects are there, and rewrites addresses and timings so the real binaries run fast on 127.0.0.1.
"""

from __future__ import annotations

import re
from pathlib import Path

import requests
import yaml
from repo_files import RULES_DIR, load_yaml

from devtools.stack_render import render_prometheus_config  # noqa: F401 - re-exported for the tests

DURATION = re.compile(r"(\d+)([smhd])")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _scale_duration(text: str, factor: float) -> str:
    seconds = sum(int(number) * SECONDS[unit] for number, unit in DURATION.findall(text))
    return f"{max(1, round(seconds * factor))}s"


def render_scaled_rules(out_dir: Path, factor: float, minimum_for: str = "1s") -> Path:
    """prometheus/rules/*.yml with every range `[...]`, `offset` and `for:` multiplied by `factor` (time
    compressed)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(RULES_DIR.glob("*.yml")):
        config = load_yaml(path)
        for group in config["groups"]:
            for rule in group["rules"]:
                rule["expr"] = re.sub(r"\[(\w+)\]", lambda m: f"[{_scale_duration(m.group(1), factor)}]", rule["expr"])
                rule["expr"] = re.sub(r"\boffset (\w+)", lambda m: f"offset {_scale_duration(m.group(1), factor)}",
                                      rule["expr"])
                if "for" in rule:
                    rule["for"] = max(_scale_duration(rule["for"], factor), minimum_for,
                                      key=lambda value: int(value[:-1]))
        (out_dir / path.name).write_text(yaml.safe_dump(config, sort_keys=False))
    return out_dir


def api_post(url: str, path: str, body: dict) -> dict:
    """POST `body` as JSON to the API at `url`; the answer's JSON (`{}` when empty), asserting a 2xx status."""
    response = requests.post(f"{url}{path}", json=body, timeout=10)
    assert response.status_code < 300, f"POST {path}: {response.status_code} {response.text}"
    return response.json() if response.content else {}
