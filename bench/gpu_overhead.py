"""GPU-path overhead: training steps/s with monitoring off vs on (1 Hz and 5 s sampling), and per-tick sampler cost.

On a GPU machine: a small launch-bound torch loop (8 x Linear(1024), batch 256, SGD) on cuda:0, alternating
rounds of "off" (no monitor), "on 1 Hz" and "on 5 s" (a `TrainingMonitor` with GPU, system and process collectors,
`log_metrics` every step and a scraper thread reading /metrics once a second). Prints the median steps/s of each
and its ratio to "off" measured in the same run, then the median/p99 cost of `GpuCollector.tick()` per GPU against
the 0.2 ms budget (and of the system and process collectors).

`--replay` runs without a GPU: the collectors read the recorded H200 (`ReplaySource`) and the loop runs on the CPU
(torch when installed, else numpy). Its tick cost is the replay path's (Python and the replay source, no NVML),
labelled as such: it is not a hardware figure.

    .venv/bin/python bench/gpu_overhead.py                 # lent GPU machine
    .venv/bin/python bench/gpu_overhead.py --replay        # anywhere
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import threading
import time
from collections.abc import Callable

import psutil
import requests
from _common import alternating_rounds, paired_ratios, print_medians
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.collectors.gpu import GpuCollector
from trainmon.exporter.collectors.nvml_source import NvmlSource
from trainmon.exporter.collectors.process import ProcessCollector
from trainmon.exporter.collectors.system import SystemCollector

from devtools.nvml_replay import H200_PROBE, ReplaySource

MODES = {"off": None, "on_1hz": 1.0, "on_5s": 5.0}
RUN_LABELS = {"experiment": "bench", "run_id": "bench", "rank": "0"}


def torch_loop(device: str, width: int, batch: int, layers: int) -> tuple[Callable[[], float], Callable[[], None]]:
    """One training step (returns the loss as a float only when asked) and a synchronising barrier."""
    import torch

    if device == "cpu":
        torch.set_num_threads(1)
    model = torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-4)
    inputs = torch.randn(batch, width, device=device)

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = model(inputs).square().mean()
        loss.backward()
        optimizer.step()
        return 0.0  # no .item(): a sync per step would hide launch overhead

    def barrier() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    return step, barrier


def numpy_loop(width: int, batch: int, layers: int) -> tuple[Callable[[], float], Callable[[], None]]:
    import numpy as np

    rng = np.random.default_rng(0)
    weights = [rng.standard_normal((width, width), dtype=np.float32) * 0.01 for _ in range(layers)]
    inputs = rng.standard_normal((batch, width), dtype=np.float32)

    def step() -> float:
        out = inputs
        for weight in weights:
            out = out @ weight
        return 0.0

    return step, lambda: None


def run_round(step: Callable[[], float], barrier: Callable[[], None], seconds: float, interval: float | None,
              replay: bool) -> float:
    """Steps/s for `seconds`, with a monitor sampling every `interval` seconds (None: no monitor)."""
    monitor = None
    stop = threading.Event()
    if interval is not None:
        monitor = TrainingMonitor("bench-gpu-overhead", port=0, gpu=True, system=True, sample_interval=interval,
                                  handle_signals=False,
                                  nvml_source=ReplaySource(H200_PROBE) if replay else None)

        def scraper() -> None:
            while not stop.wait(1.0):
                requests.get(monitor.metrics_url, timeout=5)

        threading.Thread(target=scraper, daemon=True).start()
    try:
        barrier()
        steps = 0
        started = time.perf_counter()
        deadline = started + seconds
        while time.perf_counter() < deadline:
            step()
            steps += 1
            if monitor is not None:
                monitor.log_metrics({"loss": 1.0 / steps, "lr": 1e-4}, step=steps)
        barrier()
        return steps / (time.perf_counter() - started)
    finally:
        stop.set()
        if monitor is not None:
            monitor.finish()


class TimedSource:
    """Wraps an NVML source and records how long each call takes, to tell which call a tick's cost comes from."""

    def __init__(self, inner: object):
        self.inner = inner
        self.durations: dict[str, list[float]] = {}

    def __getattr__(self, name: str) -> object:
        call = getattr(self.inner, name)
        durations = self.durations.setdefault(name, [])

        def timed(*args: object, **kwargs: object) -> object:
            started = time.perf_counter()
            try:
                return call(*args, **kwargs)
            finally:
                durations.append(time.perf_counter() - started)

        return timed

    def report(self, ticks: int) -> str:
        rows = sorted(((sum(values) / ticks, name, statistics.median(values), len(values))
                       for name, values in self.durations.items() if len(values) >= ticks), reverse=True)
        return "\n".join(f"    {name:<22} median {median * 1e6:8.1f} us/call, {per_tick * 1e6:8.1f} us/tick"
                         for per_tick, name, median, _ in rows)


def tick_costs(collector: GpuCollector | SystemCollector | ProcessCollector, ticks: int,
               between: Callable[[], None] = lambda: None) -> list[float]:
    collector.tick()  # opens NVML, allocates GPM samples, first CPU reading
    costs = []
    for _ in range(ticks):
        between()
        started = time.perf_counter()
        collector.tick()
        costs.append(time.perf_counter() - started)
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replay", action="store_true", help="no GPU: replayed H200 and a CPU loop")
    parser.add_argument("--rounds", type=int, default=None, help="alternating rounds (default 9, replay 3)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per round (default 4, replay 1.5)")
    parser.add_argument("--ticks", type=int, default=500, help="ticks timed for the per-tick cost")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rounds = args.rounds or (3 if args.replay else 9)  # many short rounds: the pairs within a round carry the figure
    seconds = args.seconds or (1.5 if args.replay else 4.0)

    if args.replay:
        try:
            step, barrier = torch_loop("cpu", width=128, batch=32, layers=8)
            loop = "torch CPU loop, 8 x Linear(128), batch 32, 1 thread"
        except ImportError:
            step, barrier = numpy_loop(width=128, batch=32, layers=8)
            loop = "numpy CPU loop, 8 x matmul(128), batch 32"
    else:
        step, barrier = torch_loop("cuda", width=1024, batch=256, layers=8)
        loop = "torch cuda:0 loop, 8 x Linear(1024), batch 256, SGD"
    for _ in range(50):  # warm-up (allocator, kernels)
        step()
    barrier()

    print(f"loop: {loop}; {rounds} alternating rounds of {seconds:g} s; monitor = TrainingMonitor "
          f"(GPU {'replayed H200' if args.replay else 'NVML'} + system + process, log_metrics each step, 1 Hz scrape)")
    order = list(MODES)

    def print_round(index: int, results: dict[str, list[float]]) -> None:
        print(f"  round {index + 1}: " + ", ".join(f"{mode} {results[mode][-1]:.0f}" for mode in order))

    results = alternating_rounds(
        rounds, {mode: lambda _, interval=interval: run_round(step, barrier, seconds, interval, args.replay)
                 for mode, interval in MODES.items()}, rotate=True, after_round=print_round)
    medians = print_medians(results, floor="off", unit="steps/s")
    paired = paired_ratios(results, "off")
    print("paired within each round (median over rounds of the mode's steps/s / off's in the same round; steadier "
          "when the machine drifts): " + ", ".join(f"{mode} {paired[mode]:.3f}" for mode in order[1:]))

    if args.replay:
        replay = ReplaySource(H200_PROBE, position=10)
        gpu = GpuCollector(RUN_LABELS, source=replay)
        gpu_costs = tick_costs(gpu, args.ticks, between=replay.advance)
        label = "replay path (Python + ReplaySource, no NVML calls; not a hardware figure)"
    else:
        gpu = GpuCollector(RUN_LABELS, source=NvmlSource())
        gpu_costs = tick_costs(gpu, args.ticks)
        label = "NVML on this GPU machine"
        timed = TimedSource(NvmlSource())
        timed_collector = GpuCollector(RUN_LABELS, source=timed)
        tick_costs(timed_collector, args.ticks)
        timed_collector.close()
        print(f"NVML calls per tick ({len(timed_collector.gpus) or 1} GPU(s), all GPUs together, by cost):\n"
              + timed.report(args.ticks))
    if gpu.unavailable_reason:
        raise SystemExit(f"GPU collector unavailable: {gpu.unavailable_reason}")
    gpus = len(gpu.gpus)
    per_gpu_ms = [cost * 1000 / gpus for cost in gpu_costs]
    gpu.close()
    median_ms, p99_ms = statistics.median(per_gpu_ms), statistics.quantiles(per_gpu_ms, n=100)[98]
    print(f"GpuCollector.tick() per GPU ({label}; {gpus} GPU(s), {args.ticks} ticks, energy every 30 s): "
          f"median {median_ms:.3f} ms, p99 {p99_ms:.3f} ms; budget 0.2 ms -> median/budget {median_ms / 0.2:.2f}")
    system_ms = statistics.median(tick_costs(SystemCollector(RUN_LABELS), 200)) * 1000
    process_ms = statistics.median(tick_costs(ProcessCollector(RUN_LABELS), 200)) * 1000
    search_ms = statistics.median(tick_costs(ProcessCollector(RUN_LABELS, children_interval=0), 50)) * 1000
    print(f"SystemCollector.tick() median {system_ms:.3f} ms; ProcessCollector.tick() median {process_ms:.3f} ms, "
          f"{search_ms:.3f} ms with the search for children (every children_interval, 10 s) (real psutil on this "
          f"host, {len(psutil.pids())} processes)")
    print(json.dumps({"steps_per_s_median": medians, "ratio_vs_off": {m: medians[m] / medians["off"] for m in order},
                      "paired_ratio_vs_off": paired,
                      "gpu_tick_ms_per_gpu": {"median": median_ms, "p99": p99_ms, "source": label},
                      "system_tick_ms": system_ms, "process_tick_ms": process_ms,
                      "process_tick_with_search_ms": search_ms}))


if __name__ == "__main__":
    main()
