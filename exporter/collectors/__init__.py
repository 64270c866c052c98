"""Sampled collectors (one per file, each with an injectable source) and the one place that builds them."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("trainmon.exporter")


def build_sampled_collectors(run_labels: Mapping[str, str], *, gpu: bool, system: bool, local_rank: int,
                             local_world_size: int, nvml_source: Any = None, psutil_source: Any = None) -> list:
    """The GPU, system and process collectors a rank runs; one that cannot start is left out with a warning.

    Host series come from local rank 0 only; every rank reports its own process (and its GPU)."""
    collectors: list = []
    labels = dict(run_labels)
    if gpu:
        try:
            from .gpu import GpuCollector  # noqa: PLC0415 - NVML bindings load only when GPU metrics are on

            collectors.append(GpuCollector(labels, source=nvml_source, local_rank=local_rank,
                                           local_world_size=local_world_size))
        except Exception as error:  # noqa: BLE001 - the rest keeps working without it
            log.warning("trainmon: gpu collector disabled: %s", error)
    if system:
        try:
            from .process import ProcessCollector  # noqa: PLC0415
            from .system import SystemCollector  # noqa: PLC0415

            if local_rank == 0:
                collectors.append(SystemCollector(labels, source=psutil_source))
            collectors.append(ProcessCollector(labels, source=psutil_source))
        except Exception as error:  # noqa: BLE001
            log.warning("trainmon: system/process collectors disabled: %s", error)
    return collectors
