"""A TrainingMonitor with every collector on, for tests that check the whole exposition (docs/metrics.md, promtool)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

from trainmon.exporter import TrainingMonitor

from devtools.nvml_replay import ReplaySource
from support.fixtures import H200_PROBE


@contextlib.contextmanager
def full_monitor(experiment: str) -> Iterator[TrainingMonitor]:
    """Training series of every kind (steps, epoch, samples, tokens, checkpoint, NaN/Inf, a rejected value, phases),
    health, real psutil system/process readings and GPU readings replayed from the H200 fixture. Sampling every
    0.2 s, served on a free port."""
    with TrainingMonitor(experiment, "proj", port=0, gpu=True, nvml_source=ReplaySource(H200_PROBE), system=True,
                         batch_size=8, sample_interval=0.2, handle_signals=False) as monitor:
        for step in range(20):
            with monitor.phase("forward"):
                pass
            with monitor.phase("allreduce", waiting=True):
                pass
            monitor.log_metrics({"loss": 1.0 / (step + 1), "epoch": step // 10, "val/ppl": math.inf, "bad": "x"},
                                step, tokens=512)
        monitor.log_checkpoint("ckpt")
        yield monitor
