"""The repository's stack configs rendered for local servers (`make demo`; the same rendering as tests/stack).

Nothing here forks a config: `render_prometheus_config` loads `prometheus/prometheus.yml` (the file
docker-compose.yml mounts), checks the jobs it rewrites are there, and changes only addresses and intervals;
`alertmanager_renderer` loads `alertmanager/render.py`, the code docker-compose runs before Alertmanager starts.
Both read the repository's files (this folder's siblings); PyYAML is needed and imported on use.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from urllib.parse import urlsplit

from devtools import REPO

PROMETHEUS_DIR = REPO / "prometheus"
RULES_DIR = PROMETHEUS_DIR / "rules"
ALERTMANAGER_DIR = REPO / "alertmanager"
REQUIRED_JOBS = ("trainmon-trainers", "pushgateway", "trainmon-api")


class StackConfigMissing(RuntimeError):
    """The source tree's stack configs are not there (e.g. trainmon installed from a wheel)."""


def _hostport(url: str) -> str:
    return urlsplit(url).netloc


def render_prometheus_config(*, api_url: str | None, pushgateway_url: str | None, alertmanager_url: str | None,
                             rules_dir: Path = RULES_DIR, interval: str = "1s",
                             source: Path = PROMETHEUS_DIR / "prometheus.yml") -> str:
    """`source` (prometheus.yml) with its targets pointed at local servers and every interval set to `interval`.

    Jobs whose server is not given are dropped; the self-scrape jobs are dropped; `alerting` points at
    `alertmanager_url` or is removed.
    """
    import yaml  # noqa: PLC0415 - only the demo and the stack tests render configs

    if not source.is_file():
        raise StackConfigMissing(f"{source} not found: run from a trainmon checkout")
    config = yaml.safe_load(source.read_text())
    config["global"].update(scrape_interval=interval, scrape_timeout=interval, evaluation_interval=interval)
    config["rule_files"] = [str(rules_dir / "*.yml")]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    missing = [name for name in REQUIRED_JOBS if name not in jobs]
    if missing:
        raise ValueError(f"{source} lost the scrape job(s) {', '.join(missing)}")
    kept = []
    if api_url:
        jobs["trainmon-trainers"]["http_sd_configs"][0].update(url=f"{api_url}/api/sd", refresh_interval=interval)
        jobs["trainmon-api"]["static_configs"] = [{"targets": [_hostport(api_url)]}]
        kept += [jobs["trainmon-trainers"], jobs["trainmon-api"]]
    if pushgateway_url:
        jobs["pushgateway"]["static_configs"] = [{"targets": [_hostport(pushgateway_url)]}]
        kept.append(jobs["pushgateway"])
    config["scrape_configs"] = kept
    if alertmanager_url:
        config["alerting"]["alertmanagers"][0]["static_configs"] = [{"targets": [_hostport(alertmanager_url)]}]
    else:
        config.pop("alerting", None)
    return yaml.safe_dump(config, sort_keys=False)


def alertmanager_renderer(source_dir: Path = ALERTMANAGER_DIR) -> ModuleType:
    """`alertmanager/render.py` as a module (its `render(out_dir, env)` writes alertmanager.yml + templates)."""
    path = source_dir / "render.py"
    if not path.is_file():
        raise StackConfigMissing(f"{path} not found: run from a trainmon checkout")
    spec = importlib.util.spec_from_file_location("trainmon_alertmanager_render", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
