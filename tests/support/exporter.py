"""A TrainingMonitor with every collector on, for tests that check the whole exposition (README table, promtool)."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from pathlib import Path

import pytest
from trainmon.exporter import TrainingMonitor

H200_FIXTURE = Path(__file__).resolve().parents[3] / "shared" / "fixtures" / "nvml-h200" / "nvml_probe.json"


@contextlib.contextmanager
def full_monitor(experiment: str) -> Iterator[TrainingMonitor]:
    """Training series of every kind (steps, epoch, samples, tokens, checkpoint, NaN/Inf, a rejected value),
    health, real psutil system/process readings and GPU readings replayed from the H200 fixture when present
    (`monitor.config.gpu` tells which). Sampling every 0.2 s, served on a free port."""
    source = None
    if H200_FIXTURE.exists():
        source = pytest.importorskip("trainmon.exporter.collectors.nvml_source").ReplaySource(H200_FIXTURE)
    with TrainingMonitor(experiment, "proj", port=0, gpu=source is not None, nvml_source=source, system=True,
                         batch_size=8, sample_interval=0.2, handle_signals=False) as monitor:
        for step in range(20):
            monitor.log_metrics({"loss": 1.0 / (step + 1), "epoch": step // 10, "val/ppl": math.inf, "bad": "x"},
                                step, tokens=512)
        monitor.log_checkpoint("ckpt")
        yield monitor
