"""Step time of a simulated training loop: monitoring off, on (API up), on with the API down, on with a hanging API.

Each step does a fixed amount of numpy work (the floor, measured in the same run with no monitor) and logs
4 scalars. Modes run in alternating rounds so machine noise hits all of them alike; prints step-time p50/p99 per
mode and the ratio of each p50/p99 to the floor's. The API is the real metadata API (`python -m
trainmon.metadata_api`, SQLite in a temp dir); "down" points at a closed port; "hanging" at a listener that
accepts and never answers.

    .venv/bin/python bench/loop_impact.py [--steps 3000] [--rounds 4]
"""

from __future__ import annotations

import argparse
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # one core of work per step, like a GPU-feeding loop
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from _common import alternating_rounds, hanging_listener, quantile  # noqa: E402
from trainmon.exporter import TrainingMonitor  # noqa: E402

from devtools.procs import free_port, run_api  # noqa: E402


def run_loop(steps: int, monitor: TrainingMonitor | None, work: np.ndarray) -> list[float]:
    """Step times (seconds) of `steps` steps: some numpy work, then log_metrics with 4 scalars."""
    times = []
    log = monitor.log_metrics if monitor is not None else None
    clock = time.perf_counter
    for step in range(steps):
        started = clock()
        value = float((work @ work).trace())
        if log is not None:
            log({"loss": value, "accuracy": 0.5, "lr": 3e-4, "grad_norm": 1.0}, step=step)
        times.append(clock() - started)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--size", type=int, default=128, help="matrix size of the per-step work")
    args = parser.parse_args()
    logging.getLogger("trainmon.exporter").setLevel(logging.ERROR)  # the down/hanging modes warn, as they should
    work = np.random.default_rng(0).random((args.size, args.size))
    workdir = Path(tempfile.mkdtemp(prefix="trainmon-bench-"))
    hole, hanging_url = hanging_listener()

    def monitored(api_url: str) -> Callable[[int], list[float]]:
        def one_round(round_index: int) -> list[float]:
            monitor = TrainingMonitor("bench-loop", port=False, gpu=False, system=False, handle_signals=False,
                                      env={}, api_url=api_url, spool_dir=str(workdir / f"spool-{round_index}"))
            times = run_loop(args.steps, monitor, work)
            monitor.recorder.config.flush_timeout = 2.0  # a bench: don't wait long at the end
            monitor.finish()
            return times

        return one_round

    run_loop(args.steps, None, work)  # warm-up
    try:
        with run_api(f"sqlite:///{workdir / 'b.db'}", workdir) as url:
            rounds = alternating_rounds(args.rounds, {
                "off": lambda _: run_loop(args.steps, None, work),
                "on (API up)": monitored(url),
                "on (API down)": monitored(f"http://127.0.0.1:{free_port()}"),
                "on (API hanging)": monitored(hanging_url)})
    finally:
        hole.close()
    samples = {mode: [seconds for times in per_round for seconds in times] for mode, per_round in rounds.items()}
    floor50, floor99 = quantile(samples["off"], 0.5), quantile(samples["off"], 0.99)
    print(f"{'mode':18} {'p50 us':>9} {'p99 us':>9} {'p50 ratio':>10} {'p99 ratio':>10} {'p50 +us':>8}   "
          f"({args.rounds} x {args.steps} steps each, floor = off)")
    for mode, times in samples.items():
        p50, p99 = quantile(times, 0.5), quantile(times, 0.99)
        print(f"{mode:18} {p50 * 1e6:9.1f} {p99 * 1e6:9.1f} {p50 / floor50:10.3f} {p99 / floor99:10.3f} "
              f"{(p50 - floor50) * 1e6:8.2f}")


if __name__ == "__main__":
    main()
