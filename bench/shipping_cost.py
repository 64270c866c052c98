"""What shipping history to the metadata API costs the trainer, side by side with the exporter alone.

A loop of ~0.2 ms steps (a fixed amount of CPU work, calibrated once: the same in every mode) logs 4 scalars
every step, in a fresh process
per repetition, three modes in alternating rounds: `floor` (no monitor), `exporter` (TrainingMonitor with the
metadata side disabled) and `shipping` (the real metadata API on SQLite in its own process; collectors off in
both). Per mode: the trainer process's CPU over the floor per log call (all threads: hot path, drain, encoding,
HTTP, acknowledgements and finish), and the loop's wall time over the floor (slowdown). Medians.

    .venv/bin/python bench/shipping_cost.py [--calls 50000] [--rounds 5] [--step-us 200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import REPO, alternating_rounds, print_medians

from devtools.procs import run_api

CHILD = r"""
import json, os, sys, tempfile, time
mode, calls, work, url = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
monitor = None
if mode != "floor":
    from trainmon.exporter import TrainingMonitor
    options = dict(port=False, gpu=False, system=False, handle_signals=False, env={})
    if mode == "shipping":
        options.update(api_url=url, spool_dir=tempfile.mkdtemp())
    else:
        options.update(mode="disabled")
    monitor = TrainingMonitor("bench-shipping", **options)
log = monitor.log_metrics if monitor is not None else None
clock = time.perf_counter
cpu0, wall0 = os.times(), clock()
for step in range(calls):
    sum(range(work))
    if log is not None:
        log({"loss": 1.0 / (step + 1), "accuracy": step / calls, "lr": 3e-4, "grad_norm": 0.5}, step=step)
if monitor is not None:
    monitor.finish()
cpu1, wall1 = os.times(), clock()
print(json.dumps({"cpu": (cpu1.user + cpu1.system) - (cpu0.user + cpu0.system), "wall": wall1 - wall0}))
"""


def calibrate(step_us: float) -> int:
    """How long `sum(range(n))` must be to take ``step_us`` here (best of many runs)."""
    n = 10_000
    best = min(_timed(n) for _ in range(200))
    return max(1, int(n * step_us / 1e6 / best))


def _timed(n: int) -> float:
    started = time.perf_counter()
    sum(range(n))
    return time.perf_counter() - started


def measure(mode: str, calls: int, work: int, url: str) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-c", CHILD, mode, str(calls), str(work), url], capture_output=True,
                            text=True, timeout=600, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-2000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--step-us", type=float, default=200.0)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench-shipping-"))
    work = calibrate(args.step_us)
    print(f"{os.cpu_count()} cores; {args.calls} calls of 4 points, a {args.step_us:.0f} us step, "
          f"{args.rounds} rounds, fresh process each")
    with run_api(f"sqlite:///{workdir / 'bench.db'}", workdir) as url:
        modes = {mode: (lambda _index, mode=mode: measure(mode, args.calls, work, url))
                 for mode in ("floor", "exporter", "shipping")}
        started = time.monotonic()
        results = alternating_rounds(args.rounds, modes, rotate=True)
    floor_cpu = sorted(r["cpu"] for r in results["floor"])[len(results["floor"]) // 2]
    print("trainer CPU per log call over the floor (all threads, incl. drain, shipping and finish):")
    over = {mode: [(r["cpu"] - floor_cpu) / args.calls for r in results[mode]] for mode in ("exporter", "shipping")}
    medians = print_medians(over, "exporter", "us", scale=1e6, digits=2)
    print("loop wall time (slowdown = ratio - 1):")
    print_medians({mode: [r["wall"] for r in values] for mode, values in results.items()}, "floor", "s", digits=3)
    print(f"shipping over exporter: {medians['shipping'] / medians['exporter']:.2f}x "
          f"(goal <= 2x, <= 5 us per call); {time.monotonic() - started:.0f} s")


if __name__ == "__main__":
    main()
