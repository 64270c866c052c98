"""The metadata API stands on its own: importing it (every module of it) loads nothing of the exporter or the
client; what it shares with them comes from `trainmon.common`.

`prometheus_client` and `requests` may be loaded: the API serves its own /metrics and posts to Alertmanager."""

from __future__ import annotations

import json
import subprocess
import sys

FORBIDDEN = ("trainmon.exporter", "trainmon.client")

PROBE = """
import importlib, json, pkgutil, sys
import trainmon.metadata_api as package
import trainmon.metadata_api.app
imported = ["trainmon.metadata_api.app"]
for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if module.name.startswith(package.__name__ + ".migrations."):  # alembic's scripts run inside alembic only
        continue
    importlib.import_module(module.name)
    imported.append(module.name)
print(json.dumps({"imported": imported, "loaded": sorted(sys.modules)}))
"""


def loaded_modules() -> tuple[list[str], list[str]]:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    return answer["imported"], answer["loaded"]


def test_the_api_imports_nothing_from_the_exporter_or_the_client() -> None:
    imported, loaded = loaded_modules()
    assert "trainmon.metadata_api.app" in imported and "trainmon.metadata_api.cli" in imported
    assert "trainmon.common.wire" in loaded
    offenders = [name for name in loaded
                 if any(name == prefix or name.startswith(prefix + ".") for prefix in FORBIDDEN)]
    assert offenders == []
