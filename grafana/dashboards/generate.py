"""Generate every `*.dashboard.py` in this folder into the `*.json` next to it (what Grafana provisioning loads).

    python grafana/dashboards/generate.py            # (re)write the JSON files; `make dashboards` runs this
    python grafana/dashboards/generate.py --check    # exit 1, naming the files, when a JSON file is stale
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SUFFIX = ".dashboard.py"


def dashboard_sources(folder: Path = HERE) -> list[Path]:
    return sorted(folder.glob(f"*{SUFFIX}"))


def json_path(source: Path) -> Path:
    return source.with_name(source.name.removesuffix(SUFFIX) + ".json")


def render(source: Path) -> str:
    """The JSON text of the `dashboard` a `*.dashboard.py` file defines."""
    if str(source.parent) not in sys.path:
        sys.path.insert(0, str(source.parent))  # the dashboards import trainmon_panels from this folder
    from grafanalib._gen import DashboardEncoder

    namespace = runpy.run_path(str(source))
    if "dashboard" not in namespace:
        raise ValueError(f"{source.name} defines no `dashboard`")
    data = namespace["dashboard"].to_json_data()
    return json.dumps(data, cls=DashboardEncoder, indent=2, sort_keys=True) + "\n"


def stale(folder: Path = HERE) -> list[Path]:
    """The JSON files that differ from what their sources generate now (missing ones included)."""
    return [json_path(source) for source in dashboard_sources(folder)
            if not json_path(source).exists() or json_path(source).read_text() != render(source)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale JSON files")
    args = parser.parse_args(argv)
    if args.check:
        outdated = stale()
        for path in outdated:
            print(f"stale: {path.relative_to(HERE.parents[1])} (run `make dashboards`)", file=sys.stderr)
        return 1 if outdated else 0
    for source in dashboard_sources():
        json_path(source).write_text(render(source))
        print(f"wrote {json_path(source).relative_to(HERE.parents[1])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
