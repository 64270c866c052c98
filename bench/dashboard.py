"""The dashboard's costs, against a real API subprocess on SQLite and in Debian's Chromium (Playwright):

1. the run page of a 1,000,000-step x 4-key run (noisy values: the reduction keeps about `max_points` points):
   time from navigation to the first chart painted, and bytes of each chart's data (on the wire, gzipped, and
   decoded); floor: the HTML page itself delivered (`responseEnd`). Budget: <= 100 KB a chart.
2. the runs page over 10,000 runs (100 experiments, params, a 256-step val_loss each): server time of a page of
   50 (`Server-Timing`) for the default view, a param filter, a metric filter, a sort on a metric's last value and
   on its min; floor: the login page (a template, no query). Budget: <= 300 ms.

Prints medians and ratios against the floors measured in the same run.

    .venv/bin/python bench/dashboard.py [--repeats 7] [--steps 1000000] [--runs 10000]
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import requests
from _common import alternating_rounds, print_medians
from sqlalchemy import Engine, insert, select
from trainmon.metadata_api.db import make_engine
from trainmon.metadata_api.models import Experiment, Project, Run

from devtools.procs import run_api

PROJECT = "bench"
LONG_RUN = "long-1m"
KEYS = ("train_loss", "val_loss", "grad_norm", "lr")
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
RUN_PAGE_VIEWS = {
    "newest first": "/",
    "param filter": "/?where=lr%20%3C%201e-3&params=lr,batch_size",
    "metric filter": "/?where=val_loss%20%3C%200.5&metrics=val_loss",
    "sort metric last": "/?sort=metric:val_loss&order=asc&metrics=val_loss",
    "sort metric min": "/?sort=metric:val_loss.min&order=asc&metrics=val_loss",
    "page 100": "/?page=100&metrics=val_loss&params=lr",
}


def _copy_rows(engine: Engine, rows: list[tuple]) -> None:
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        cursor.execute("BEGIN")
        cursor.executemany("INSERT INTO metric_points (run_key, key, step, value, special, wall_time) "
                           "VALUES (?, ?, ?, ?, ?, ?)", rows)
        connection.commit()
    finally:
        connection.close()


def _blocks(engine: Engine, where: str) -> None:
    """The block summaries ingest keeps (`series_blocks`), for finite points written straight into the table."""
    with engine.begin() as connection:
        connection.exec_driver_sql(
            "INSERT INTO metric_blocks (run_key, rank, key, block, first_step, last_step, count, min_value, "
            "max_value, nan_step, pos_inf_step, neg_inf_step, min_wall_time) SELECT run_key, rank, key, step / 64, "
            "MIN(step), MAX(step), COUNT(*), MIN(value), MAX(value), NULL, NULL, NULL, MIN(wall_time) "
            f"FROM metric_points WHERE {where} GROUP BY run_key, rank, key, step / 64")


def fill_long_run(url: str, engine: Engine, steps: int) -> None:
    requests.post(f"{url}/api/runs", json={"experiment": "scale", "project": PROJECT, "run_id": LONG_RUN},
                  timeout=30).raise_for_status()
    with engine.connect() as connection:
        run_key = connection.execute(select(Run.key).where(Run.id == LONG_RUN)).scalar_one()
    rng = random.Random(3)
    for index, key in enumerate(KEYS):
        rows = [(run_key, key, step, 2.0 * math.exp(-step / (steps / 5)) + index + rng.gauss(0, 0.05), 0,
                 1.7e9 + step * 0.05) for step in range(steps)]
        rows[steps // 2 + 1] = (run_key, key, steps // 2 + 1, 50.0, 0, rows[steps // 2 + 1][5])
        _copy_rows(engine, rows)
    _blocks(engine, f"run_key = {int(run_key)}")


def fill_runs(engine: Engine, count: int, steps: int = 256) -> None:
    """`count` finished runs in 100 experiments of one project, each with params and a `val_loss` series."""
    rng = random.Random(5)
    now = datetime.now(timezone.utc)
    with engine.begin() as connection:
        project_id = connection.execute(select(Project.id).where(Project.name == PROJECT)).scalar_one()
        experiment_ids = [connection.execute(insert(Experiment).values(project_id=project_id, name=f"sweep-{i:03d}",
                                                                       created_at=now)).inserted_primary_key[0]
                          for i in range(100)]
        rows = [{"id": f"run-{i:05d}", "project_id": project_id, "experiment_id": experiment_ids[i % 100],
                 "status": ("COMPLETED", "FAILED", "CRASHED", "RUNNING")[i % 4],
                 "start_time": now - timedelta(minutes=count - i), "end_time": now - timedelta(minutes=count - i - 30),
                 "last_heartbeat": now - timedelta(minutes=count - i - 30), "host": f"gpu-node-{i % 64:02d}",
                 "command": "python train.py", "world_size": 8,
                 "params": {"lr": 10 ** rng.uniform(-5, -1), "batch_size": rng.choice([32, 64, 128]),
                            "optimizer": {"name": rng.choice(["adam", "sgd"])}}} for i in range(count)]
        connection.execute(insert(Run), rows)
        keys = connection.execute(select(Run.key).where(Run.id.like("run-%"))).scalars().all()
    points = [(key, "val_loss", step, 1.0 / (1 + step * 0.01) + rng.random() * 0.5, 0, 1.7e9 + step)
              for key in keys for step in range(steps)]
    _copy_rows(engine, points)
    _blocks(engine, "key = 'val_loss' AND run_key IN (SELECT key FROM runs WHERE id LIKE 'run-%')")
    # No ANALYZE: the API never runs it on SQLite (with its statistics SQLite plans a Bloom filter for the cut
    # blocks' part aggregates that scans the whole series: a 1M-step reduction 15x slower).


def server_ms(url: str) -> float:
    answer = requests.get(url, timeout=60)
    answer.raise_for_status()
    return float(answer.headers["server-timing"].split("dur=")[1])


def bench_runs_page(url: str, repeats: int) -> dict[str, float]:
    modes = {"login page (floor)": lambda _i: server_ms(f"{url}/login")}
    modes.update({name: (lambda _i, path=path: server_ms(url + path)) for name, path in RUN_PAGE_VIEWS.items()})
    for mode in modes.values():
        mode(0)  # warm: templates compiled, caches filled
    samples = alternating_rounds(repeats, modes, rotate=True)
    print("\nruns page, server time of a page of 50 over the runs (Server-Timing):")
    return print_medians(samples, "login page (floor)", "ms")


def bench_run_page(url: str, repeats: int) -> None:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    first_paint, html, transfer, decoded, points = [], [], [], [], []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS, headless=True)
        for _ in range(repeats + 1):
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{url}/runs/{LONG_RUN}?project={PROJECT}")
            page.wait_for_function(f"() => {len(KEYS)} === Object.values(window.__trainmon.charts)"
                                   ".filter(c => c.paints > 0).length", timeout=60_000)
            page.wait_for_load_state("networkidle")
            measured = page.evaluate("""() => ({
                firstPaint: window.__trainmon.firstPaint,
                html: performance.getEntriesByType('navigation')[0].responseEnd,
                charts: performance.getEntriesByType('resource').filter(r => r.name.includes('/metrics/'))
                    .map(r => ({transfer: r.transferSize, decoded: r.decodedBodySize})),
                points: Object.values(window.__trainmon.charts).map(c => c.points)})""")
            page.close()
            if not html:  # the first round warms the server's caches and the browser's
                html.append(None)
                continue
            first_paint.append(measured["firstPaint"])
            html.append(measured["html"])
            transfer.extend(chart["transfer"] for chart in measured["charts"])
            decoded.extend(chart["decoded"] for chart in measured["charts"])
            points.extend(measured["points"])
        browser.close()
    html = html[1:]
    print(f"\nrun page of a {len(KEYS)}-key run, 1M steps a key, in Chromium ({repeats} loads):")
    print_medians({"HTML delivered (floor)": html, "first chart painted": first_paint}, "HTML delivered (floor)",
                  "ms")
    print(f"data per chart: median {statistics.median(transfer) / 1024:.1f} KB on the wire (gzip), "
          f"{statistics.median(decoded) / 1024:.1f} KB decoded, max {max(transfer) / 1024:.1f} KB on the wire; "
          f"{statistics.median(points):.0f} points a chart; budget 100 KB: "
          f"{'met' if max(transfer) <= 100 * 1024 else 'MISSED'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    if not shutil.which("chromium") and not Path("/usr/bin/chromium").exists():
        print("chromium is not installed (apt-get install chromium)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as tmp:
        database = f"sqlite:///{Path(tmp) / 'bench.db'}"
        with run_api(database, Path(tmp)) as url:
            engine = make_engine(database)
            started = time.perf_counter()
            fill_long_run(url, engine, args.steps)
            fill_runs(engine, args.runs)
            engine.dispose()
            print(f"filled {len(KEYS)} x {args.steps} points and {args.runs} runs in "
                  f"{time.perf_counter() - started:.0f} s")
            medians = bench_runs_page(url, args.repeats)
            bench_run_page(url, args.repeats)
            worst = max(value for name, value in medians.items() if name in RUN_PAGE_VIEWS)
            print(f"runs page budget 300 ms: {'met' if worst <= 300 else 'MISSED'} (slowest view {worst:.1f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
