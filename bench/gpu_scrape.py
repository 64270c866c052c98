"""Two scrapes of a TrainingMonitor's GPU series, idle and under load, saved as text for the docs.

On a GPU machine the load is a bf16 8192^3 matrix-product loop on cuda:0 (tensor cores near 100 %); `--replay`
reads the recorded H200 (`ReplaySource`, its idle and load phases) instead, anywhere. Writes OUT_DIR/scrape_idle.txt
and OUT_DIR/scrape_load.txt (the `trainmon_gpu_*` lines and the collector's health lines) and prints a summary.

    .venv/bin/python bench/gpu_scrape.py OUT_DIR [--replay]
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import _common  # noqa: F401 - puts the repository root on sys.path, for devtools
import requests
from trainmon.exporter import TrainingMonitor

from devtools.gpu_load import MatmulLoad
from devtools.nvml_replay import H200_PROBE, ReplaySource

LOAD_POSITION = 14  # a reading of the recorded load phase (see the fixture's README)


def gpu_lines(url: str) -> str:
    """The GPU series of one scrape (with their HELP and TYPE lines), and the GPU collector's health samples."""
    kept = []
    for line in requests.get(url, timeout=10).text.splitlines():
        name = line.split()[2] if line.startswith("# ") else line.partition("{")[0].partition(" ")[0]
        if name.startswith("trainmon_gpu_") or (name.startswith("trainmon_exporter_collector_")
                                                 and not line.startswith("#") and 'collector="gpu"' in line):
            kept.append(f"{line}\n")
    return "".join(kept)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--replay", action="store_true", help="the recorded H200 instead of NVML")
    parser.add_argument("--seconds", type=float, default=6.0, help="seconds of load before the second scrape")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    args.out.mkdir(parents=True, exist_ok=True)
    replay = ReplaySource(H200_PROBE) if args.replay else None
    monitor = TrainingMonitor("gpu-scrape", port=0, gpu=True, system=False, sample_interval=1.0,
                              handle_signals=False, nvml_source=replay)
    try:
        time.sleep(2.5)  # two ticks: GPM needs a previous sample
        (args.out / "scrape_idle.txt").write_text(gpu_lines(monitor.metrics_url))
        load = None if replay is not None else MatmulLoad()
        if load is None:
            replay.seek(LOAD_POSITION)
        else:
            load.start()
        try:
            for step in range(int(args.seconds)):
                time.sleep(1.0)
                monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            (args.out / "scrape_load.txt").write_text(gpu_lines(monitor.metrics_url))
        finally:
            if load is not None:
                load.stop()
    finally:
        monitor.finish()
    for name in ("scrape_idle.txt", "scrape_load.txt"):
        lines = (args.out / name).read_text().splitlines()
        print(f"{name}: {sum(not line.startswith('#') for line in lines)} samples")


if __name__ == "__main__":
    main()
