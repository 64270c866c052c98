"""A trainer process for the SDK tests: logs a known series through `TrainingMonitor`, then finishes,
or (``--hang``) makes sure everything is delivered or spooled, prints SAFE and waits to be killed.

Configured like a real trainer, through TRAINMON_API_URL, TRAINMON_SPOOL_DIR, TRAINMON_MODE, ... .
"""

from __future__ import annotations

import argparse
import json
import os
import time

from trainmon.exporter import TrainingMonitor


def value(key_index: int, step: int) -> float:
    """The value logged for key ``k<key_index>`` at ``step`` (exact in binary floating point)."""
    return key_index * 1_000_000 + step + 0.25


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--experiment", default="sdk-test")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=4)
    parser.add_argument("--pause-every", type=int, default=0)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--wait-file", default=None, help="start logging once this file exists")
    parser.add_argument("--hang", action="store_true", help="after logging: print SAFE and wait to be killed")
    parser.add_argument("--signals", action="store_true", help="let the monitor handle SIGTERM")
    args = parser.parse_args()
    monitor = TrainingMonitor(args.experiment, run_id=args.run_id, port=False, gpu=False, system=False,
                              handle_signals=args.signals, params={"lr": 0.1, "model": {"depth": 4}},
                              tags={"suite": "sdk"})
    print("STARTED", monitor.run_id, flush=True)
    while args.wait_file and not os.path.exists(args.wait_file):
        time.sleep(0.05)
    keys = [f"k{index}" for index in range(args.keys)]
    for step in range(args.steps):
        monitor.log_metrics({key: value(index, step) for index, key in enumerate(keys)}, step=step)
        if args.pause_every and step % args.pause_every == args.pause_every - 1:
            time.sleep(args.pause)
    monitor.add_note(f"logged {args.steps} steps")
    if args.hang:
        monitor.flush()  # drain the hot-path buffer into the shipper
        monitor.recorder.flush(60, deliver=False)  # then wait until it is sent or on disk
        print("SAFE", flush=True)
        time.sleep(3600)
    shipper = monitor.recorder.shipper  # the test reads what the shipper went through
    monitor.finish("COMPLETED")
    if shipper is not None:
        print("STATS", json.dumps({**shipper.stats, "dropped": sum(shipper.dropped_points.values())}), flush=True)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
