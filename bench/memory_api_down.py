"""Memory of a trainer that logs 1,000,000 points while the metadata API is down: RSS growth stays bounded.

Each mode runs in a fresh interpreter: the same loop (250,000 steps x 4 scalars) with monitoring disabled (the
floor) and with the API down (a closed port: every batch goes to the on-disk spool). Prints RSS before, the
peak growth after 25 %, 50 % and 100 % of the points and at the end, the spool size, dropped points, and the
ratio of peak growth to the floor's. Bounded means the growth does not follow the number of points (the
in-memory queue holds at most `queue_points`, the rest is on disk): the peak at 100 % is about the peak at 25 %.

    .venv/bin/python bench/memory_api_down.py [--points 1000000]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import _common  # noqa: F401 - first: puts the repository root on sys.path, for devtools
import psutil

from devtools.procs import free_port


def child(mode: str, points: int, spool_dir: str) -> None:
    from trainmon.exporter import TrainingMonitor

    logging.getLogger("trainmon.exporter").setLevel(logging.ERROR)
    process = psutil.Process()
    monitor = TrainingMonitor("bench-memory", port=False, gpu=False, system=False, handle_signals=False, env={},
                              mode=mode, api_url=f"http://127.0.0.1:{free_port()}", spool_dir=spool_dir)
    before = process.memory_info().rss
    peak = before
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.wait(0.05):
            peak = max(peak, process.memory_info().rss)

    threading.Thread(target=sample, daemon=True).start()
    steps = points // 4
    checkpoints = {steps // 4: "growth_25", steps // 2: "growth_50"}
    growth: dict[str, int] = {}
    for step in range(steps):
        monitor.log_metrics({"loss": step * 1e-6, "acc": 0.5, "lr": 3e-4, "grad_norm": 1.0}, step=step)
        if step in checkpoints:
            growth[checkpoints[step]] = max(peak, process.memory_info().rss) - before
        if step % 100 == 0:
            time.sleep(0.0005)  # ~100k steps/s at most: a fast loop, but one the drain keeps up with
    monitor.flush()
    shipper = monitor.recorder.shipper  # the bench reports what the shipper did
    if shipper is not None:
        shipper.flush(120, deliver=False)
    stop.set()
    end = process.memory_info().rss
    peak = max(peak, end)
    spool_bytes = shipper.spool.size_bytes if shipper is not None else 0
    dropped = sum(shipper.dropped_points.values()) if shipper is not None else 0
    monitor.recorder.config.flush_timeout = 0.5
    monitor.finish()
    print(json.dumps({"before": before, "peak_growth": peak - before, **growth,
                      "end_growth": end - before, "spool_bytes": spool_bytes, "dropped": dropped}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=1_000_000)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--spool-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.points, args.spool_dir)
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="trainmon-bench-") as workdir:
        for mode in ("disabled", "online"):
            output = subprocess.run([sys.executable, __file__, "--child", mode, "--points", str(args.points),
                                     "--spool-dir", str(Path(workdir) / mode)], capture_output=True, text=True,
                                    check=True).stdout
            results[mode] = json.loads(output.strip().splitlines()[-1])
    mib = 1024 * 1024
    print(f"{'mode':22} {'RSS before':>11} {'peak@25%':>9} {'peak@50%':>9} {'peak@100%':>10} {'end':>8} "
          f"{'spool':>9} {'dropped':>8}   ({args.points:,} points)")
    for mode, label in (("disabled", "monitoring disabled"), ("online", "API down (spooling)")):
        r = results[mode]
        print(f"{label:22} {r['before'] / mib:10.1f}M {r['growth_25'] / mib:8.1f}M {r['growth_50'] / mib:8.1f}M "
              f"{r['peak_growth'] / mib:9.1f}M {r['end_growth'] / mib:7.1f}M {r['spool_bytes'] / mib:8.1f}M "
              f"{r['dropped']:8d}")
    floor = max(results["disabled"]["peak_growth"], mib)
    print(f"peak growth ratio (API down / disabled, floor >= 1 MiB): {results['online']['peak_growth'] / floor:.2f}; "
          f"spooled on disk: {results['online']['spool_bytes'] / mib:.1f} MiB")


if __name__ == "__main__":
    main()
