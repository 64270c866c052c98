"""N simulated ranks of one run against the real stack: the metadata API (SQLite, its own process) and a real
Prometheus with the repository's config and rules, discovering the ranks through the API's /api/sd.

Every rank is a real `TrainingMonitor` (in this process, one thread of training each; GPU and system collectors
off) logging 4 keys per step. Prints: the time until Prometheus scrapes every rank, series per rank, the median
scrape duration, the API process's CPU per request and per stored point, the share of heartbeats among requests,
and points logged against points stored (lost must be 0).

    .venv/bin/python bench/many_ranks.py [--ranks 64] [--seconds 30] [--steps-per-second 20]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests
from _common import REPO
from trainmon.exporter import TrainingMonitor

from devtools.procs import run_api, wait_until
from devtools.stack_render import render_prometheus_config

KEYS = ("loss", "accuracy", "lr", "grad_norm")
RUN_ID = "many-ranks"


def api_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def api_counters(url: str) -> dict[str, float]:
    text = requests.get(f"{url}/metrics", timeout=10).text
    requests_by_route: dict[str, float] = {}
    for route, count in re.findall(r'^trainmon_api_request_duration_seconds_count\{[^}]*route="([^"]+)"[^}]*\} (\S+)$',
                                   text, re.M):
        requests_by_route[route] = requests_by_route.get(route, 0.0) + float(count)
    points = sum(float(value) for value in re.findall(r"^trainmon_api_points_ingested_total (\S+)$", text, re.M))
    return {"requests": sum(requests_by_route.values()), "points": points,
            "heartbeats": sum(count for route, count in requests_by_route.items() if route.endswith("/heartbeat"))}


def rank_thread(monitor: TrainingMonitor, seconds: float, rate: float, logged: list[int]) -> None:
    step, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        monitor.log_metrics({key: step * 0.001 + index for index, key in enumerate(KEYS)}, step=step)
        step += 1
        time.sleep(1.0 / rate)
    logged.append(step * len(KEYS))


def stored_points(url: str, key: str, rank: int) -> int:
    count, after = 0, None
    while True:
        params = {"limit": 10_000, "rank": rank, **({"after_step": after} if after is not None else {})}
        page = requests.get(f"{url}/api/runs/{RUN_ID}/metrics/{key}", params=params, timeout=30)
        if page.status_code == 404:
            return count
        body = page.json()
        count += len(body["points"])
        after = body["next_after_step"]
        if after is None:
            return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ranks", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--steps-per-second", type=float, default=20.0)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    from support.procs import run_prometheus  # noqa: PLC0415 - the tests' real Prometheus runner

    workdir = Path(tempfile.mkdtemp(prefix="bench-many-ranks-"))
    print(f"{os.cpu_count()} cores; {args.ranks} ranks x {len(KEYS)} keys at {args.steps_per_second:g} steps/s "
          f"for {args.seconds:g} s")
    with run_api(f"sqlite:///{workdir / 'api.db'}", workdir) as url:
        api_pid = _listener_pid(url)
        config = render_prometheus_config(api_url=url, pushgateway_url=None, alertmanager_url=None, interval="2s")
        with run_prometheus(config, workdir / "prometheus") as prometheus:
            started = time.monotonic()
            monitors = []
            for rank in range(args.ranks):
                env = {"RANK": str(rank), "WORLD_SIZE": str(args.ranks), "LOCAL_RANK": str(rank % 8),
                       "LOCAL_WORLD_SIZE": "8"}
                monitors.append(TrainingMonitor("many-ranks", "bench", run_id=RUN_ID, port=0, gpu=False,
                                                system=False, handle_signals=False, env=env, api_url=url,
                                                spool_dir=str(workdir / "spool")))
            cpu0, counters0 = api_cpu_seconds(api_pid), api_counters(url)
            logged: list[int] = []
            threads = [threading.Thread(target=rank_thread, args=(m, args.seconds, args.steps_per_second, logged))
                       for m in monitors]
            for thread in threads:
                thread.start()
            wait_until(lambda: len(prometheus.query('up{job="trainmon-trainers"} == 1')) == args.ranks,
                       timeout=args.seconds + 120, what="every rank scraped")
            discovered = time.monotonic() - started
            series = len(prometheus.query(f'{{job="trainmon-trainers", rank="0", run_id="{RUN_ID}"}}'))
            scrape = prometheus.query('quantile(0.5, scrape_duration_seconds{job="trainmon-trainers"})')
            for thread in threads:
                thread.join()
            for monitor in monitors[1:]:
                monitor.finish()
            monitors[0].finish()
            cpu1, counters1 = api_cpu_seconds(api_pid), api_counters(url)
        stored = sum(stored_points(url, key, rank) for rank in range(args.ranks) for key in KEYS)
    requests_made = counters1["requests"] - counters0["requests"]
    points = counters1["points"] - counters0["points"]
    cpu = cpu1 - cpu0
    print(f"discovery: every rank scraped {discovered:.1f} s after the first monitor started")
    print(f"series per rank (rank 0, no GPU/system collectors): {series}")
    print(f"scrape duration, median: {float(scrape[0]['value'][1]) * 1000:.1f} ms" if scrape else "no scrapes")
    print(f"API: {requests_made:.0f} requests, {points:.0f} points; CPU {cpu:.2f} s = "
          f"{cpu / max(requests_made, 1) * 1000:.2f} ms per request, {cpu / max(points, 1) * 1e6:.1f} us per point; "
          f"heartbeats {100 * (counters1['heartbeats'] - counters0['heartbeats']) / max(requests_made, 1):.1f} % "
          "of requests")
    print(f"points: logged {sum(logged)}, stored {stored}, lost {sum(logged) - stored}")


def _listener_pid(url: str) -> int:
    """The pid of the process listening on the API's port (the uvicorn process `run_api` started)."""
    port = int(url.rsplit(":", 1)[1])
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":
            inode = fields[9]
            break
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                if os.readlink(f"/proc/{pid}/fd/{fd}") == f"socket:[{inode}]":
                    return int(pid)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


if __name__ == "__main__":
    main()
