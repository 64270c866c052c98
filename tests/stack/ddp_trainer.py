"""One rank of a synchronous data-parallel job (torch.distributed, gloo, CPU) for the straggler test.

Each step: forward and backward, then the step's device time (a GPU-bound step: the CPU waits for its kernels,
here a sleep of ``--compute-ms``, 20 % longer on ``--slow-rank``), both inside the phase "compute"; the gradient
all-reduce inside a waiting phase; the optimizer step. Every rank steps at the slowest rank's pace.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
from trainmon.exporter import TrainingMonitor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--compute-ms", type=float, default=10.0)
    parser.add_argument("--slow-rank", type=int, default=-1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    monitor = TrainingMonitor("straggler-test", port=0, gpu=False, system=False, mode="disabled",
                              handle_signals=False)
    (args.out / f"rank{rank}.target").write_text(monitor.metrics_url.split("/")[2])
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    inputs, targets = torch.randn(32, 64), torch.randn(32, 1)
    device_seconds = args.compute_ms / 1000 * (1.2 if rank == args.slow_rank else 1.0)
    for step in range(args.steps):
        with monitor.phase("compute"):
            loss = torch.nn.functional.mse_loss(model(inputs), targets)
            loss.backward()
            time.sleep(device_seconds)
        with monitor.phase("allreduce", waiting=True):
            for parameter in model.parameters():
                dist.all_reduce(parameter.grad)
                parameter.grad /= world
        with monitor.phase("optimizer"):
            optimizer.step()
            optimizer.zero_grad()
        monitor.log_metrics({"loss": loss.item()}, step=step)
    monitor.finish()
    dist.destroy_process_group()
    os._exit(0)


if __name__ == "__main__":
    main()
