"""The real NVML path end to end, on a machine with an NVIDIA GPU and CUDA-enabled torch.

CI and development machines have no GPU: these tests skip there, and the recorded H200 replays
(`test_gpu_collector.py`) cover the code paths. On a GPU machine (`bench/gpu_machine.sh`, which sets
`TRAINMON_REQUIRE_GPU=1`) a missing GPU or torch is a failure, not a skip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from support.samples import value
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.collectors.gpu import GpuCollector
from trainmon.exporter.collectors.nvml_source import NvmlSource

from devtools.gpu_load import MatmulLoad


def _gpu_torch():
    """torch with CUDA and NVML with a device, or the reason there are none."""
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    if not torch.cuda.is_available():
        return None, "torch sees no CUDA device"
    probe = GpuCollector({}, source=NvmlSource())
    probe.tick()
    reason = probe.unavailable_reason
    probe.close()
    return (None, f"NVML: {reason}") if reason else (torch, "")


TORCH, NO_GPU = _gpu_torch()


@pytest.fixture(autouse=True)
def _a_gpu() -> None:
    if TORCH is None:
        if os.environ.get("TRAINMON_REQUIRE_GPU") == "1":
            pytest.fail(f"TRAINMON_REQUIRE_GPU=1 but {NO_GPU}")
        pytest.skip(f"no GPU here ({NO_GPU}); bench/gpu_machine.sh runs these on a GPU machine")


@pytest.fixture
def matmul_load() -> Iterator[MatmulLoad]:
    load = MatmulLoad()
    yield load
    load.stop()


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by name and labels."""
    text = requests.get(url, timeout=10).text
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def highest(scrapes: list[dict[tuple[str, frozenset], float]], name: str, **labels: str) -> float:
    wanted = set(labels.items())
    found = [sample_value for one in scrapes for (sample_name, sample_labels), sample_value in one.items()
             if sample_name == name and wanted <= sample_labels]
    assert found, f"no {name}{labels} in any scrape"
    return max(found)


def test_a_real_load_shows_in_every_gpu_series_of_a_scrape(matmul_load: MatmulLoad) -> None:
    """A TrainingMonitor on the real NVML, scraped over HTTP before and while cuda:0 multiplies matrices."""
    monitor = TrainingMonitor("real-gpu", port=0, gpu=True, system=False, sample_interval=0.25,
                              handle_signals=False)
    try:
        deadline = time.monotonic() + 10
        before = scrape(monitor.metrics_url)
        while not any(name == "trainmon_gpu_power_watts" for name, _ in before):
            assert time.monotonic() < deadline, "no GPU series 10 s after the monitor started"
            time.sleep(0.1)
            before = scrape(monitor.metrics_url)
        idle_power = highest([before], "trainmon_gpu_power_watts")
        matmul_load.start()
        scrapes = []
        for step in range(16):
            time.sleep(0.25)
            monitor.log_metrics({"loss": 1.0 / (step + 1)}, step=step)
            scrapes.append(scrape(monitor.metrics_url))
        info = [labels for one in scrapes for (name, labels), _ in one.items() if name == "trainmon_gpu_info"]
        assert info and "NVIDIA" in dict(info[0])["name"]
        assert highest(scrapes, "trainmon_gpu_utilization_ratio") >= 0.9
        # GPM (Hopper and later): SM and tensor-pipe activity of a bf16 GEMM
        assert highest(scrapes, "trainmon_gpu_sm_active_ratio") >= 0.5
        assert highest(scrapes, "trainmon_gpu_tensor_active_ratio") >= 0.3
        assert 0.0 <= highest(scrapes, "trainmon_gpu_sm_occupancy_ratio") <= 1.0
        assert highest(scrapes, "trainmon_gpu_power_watts") > idle_power + 50
        assert highest(scrapes, "trainmon_gpu_power_watts") <= highest(scrapes, "trainmon_gpu_power_limit_watts") * 1.1
        assert 1e8 < highest(scrapes, "trainmon_gpu_sm_clock_hertz") < 5e9
        assert 20 < highest(scrapes, "trainmon_gpu_temperature_celsius") < 110
        reserved = TORCH.cuda.memory_reserved()
        own = highest(scrapes, "trainmon_gpu_process_memory_used_bytes", pid=str(os.getpid()))
        assert reserved <= own <= highest(scrapes, "trainmon_gpu_memory_used_bytes")
        assert highest(scrapes, "trainmon_exporter_collector_success", collector="gpu") == 1.0
        assert highest(scrapes, "trainmon_exporter_collector_duration_seconds", collector="gpu") < 0.1
        assert highest(scrapes, "trainmon_steps_total") == 16
    finally:
        monitor.finish()


def test_energy_counter_agrees_with_power_under_load(matmul_load: MatmulLoad) -> None:
    """NVML's energy counter (millijoules) becomes joules that match the power readings over the same time."""
    collector = GpuCollector({}, source=NvmlSource(), energy_interval=0)
    try:
        matmul_load.start()
        collector.tick()
        started, first = time.monotonic(), value(collector, "trainmon_gpu_energy_joules_total", gpu="0")
        powers = []
        while time.monotonic() - started < 3.0:
            time.sleep(0.1)
            collector.tick()
            powers.append(value(collector, "trainmon_gpu_power_watts", gpu="0"))
        elapsed = time.monotonic() - started
        used = value(collector, "trainmon_gpu_energy_joules_total", gpu="0") - first
        expected = sum(powers) / len(powers) * elapsed
        assert 0.7 * expected < used < 1.3 * expected, (used, expected)
    finally:
        collector.close()
