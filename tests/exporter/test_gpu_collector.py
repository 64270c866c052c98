"""GPU collector against NVML readings recorded on a real H200 (tests/fixtures/nvml-h200), replayed."""

from __future__ import annotations

import copy
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pynvml
import pytest
from prometheus_client import CollectorRegistry, generate_latest, start_http_server
from support.fixtures import H200_PROBE
from support.procs import free_port, prometheus_config, require_binary, run_prometheus, scrape_config, wait_until
from support.samples import names, samples, value
from trainmon.exporter.collectors.gpu import GpuCollector, GpuUnavailable, devices_for_rank, visible_devices
from trainmon.exporter.collectors.nvml_source import NvmlSource
from trainmon.exporter.collectors.process import ProcessCollector
from trainmon.exporter.collectors.system import SystemCollector

from devtools import REPO
from devtools.nvml_replay import ReplaySource

RUN = {"experiment": "h200-replay", "run_id": "run-1", "rank": "0"}
IDLE, LOAD = 3, 14  # positions in load_series: idle phase, bf16 matmul load phase
UUID = "GPU-96672edd-7c8a-e406-22f4-69b8156406b5"
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def probe() -> dict:
    return json.loads(H200_PROBE.read_text())


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ticked_at(probe: dict, position: int, **options) -> tuple[GpuCollector, ReplaySource]:
    """A collector that ticked at `position - 1` and `position` (GPM needs two samples)."""
    source = ReplaySource(probe, position=position - 1)
    collector = GpuCollector(RUN, source=source, pid=probe["my_pid"], **options)
    collector.tick()
    source.advance()
    collector.tick()
    assert collector.last_success
    return collector, source


def expected_series(probe: dict, position: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every series the H200 must produce at `position`, with its value in base units, from the fixture."""
    reading = probe["load_series"][position]
    calls = probe["calls"]
    total = calls["memory"]["value"]["total"]
    gpm = reading["gpm"]
    return {
        ("trainmon_gpu_utilization_ratio", ()): reading["gpu_util"] / 100,
        ("trainmon_gpu_memory_utilization_ratio", ()): reading["mem_util"] / 100,
        ("trainmon_gpu_memory_used_bytes", ()): reading["mem_used"],
        ("trainmon_gpu_memory_free_bytes", ()): total - reading["mem_used"],
        ("trainmon_gpu_memory_total_bytes", ()): total,
        ("trainmon_gpu_temperature_celsius", ()): reading["temp"],
        ("trainmon_gpu_memory_temperature_celsius", ()): probe["field_values"]["NVML_FI_DEV_MEMORY_TEMP"]["value"][
            "uiVal"],
        ("trainmon_gpu_power_watts", ()): reading["power_mw"] / 1000,
        ("trainmon_gpu_power_limit_watts", ()): calls["power_limit_mw"]["value"] / 1000,
        # read at the first tick (energy_interval 30 s), exported unchanged by the second
        ("trainmon_gpu_energy_joules_total", ()): probe["load_series"][position - 1]["energy_mj"] / 1000,
        ("trainmon_gpu_sm_clock_hertz", ()): reading["sm_clock"] * 1e6,
        ("trainmon_gpu_memory_clock_hertz", ()): calls["clock_mem"]["value"] * 1e6,
        ("trainmon_gpu_clock_event_active", (("reason", "gpu_idle"),)): 1.0,
        ("trainmon_gpu_clock_event_active", (("reason", "sw_power_cap"),)): 0.0,
        ("trainmon_gpu_ecc_errors_total", (("type", "corrected"),)): calls["ecc_volatile_corrected"]["value"],
        ("trainmon_gpu_ecc_errors_total", (("type", "uncorrected"),)): calls["ecc_volatile_uncorrected"]["value"],
        ("trainmon_gpu_pcie_replays_total", ()): 0.0,
        ("trainmon_gpu_sm_active_ratio", ()): gpm["SM_UTIL"] / 100,
        ("trainmon_gpu_sm_occupancy_ratio", ()): gpm["SM_OCCUPANCY"] / 100,
        ("trainmon_gpu_tensor_active_ratio", ()): gpm["ANY_TENSOR_UTIL"] / 100,
        ("trainmon_gpu_dram_active_ratio", ()): gpm["DRAM_BW_UTIL"] / 100,
        ("trainmon_gpu_pipe_active_ratio", (("pipe", "fp16"),)): gpm["FP16_UTIL"] / 100,
        ("trainmon_gpu_pipe_active_ratio", (("pipe", "fp32"),)): gpm["FP32_UTIL"] / 100,
        ("trainmon_gpu_pipe_active_ratio", (("pipe", "fp64"),)): gpm["FP64_UTIL"] / 100,
        ("trainmon_gpu_pcie_bytes_per_second", (("direction", "tx"),)): gpm["PCIE_TX_PER_SEC"] * MIB,
        ("trainmon_gpu_pcie_bytes_per_second", (("direction", "rx"),)): gpm["PCIE_RX_PER_SEC"] * MIB,
        ("trainmon_gpu_nvlink_bytes_per_second", (("direction", "tx"),)): gpm["NVLINK_TOTAL_TX_PER_SEC"] * MIB,
        ("trainmon_gpu_nvlink_bytes_per_second", (("direction", "rx"),)): gpm["NVLINK_TOTAL_RX_PER_SEC"] * MIB,
    }


def assert_series(collector: GpuCollector, expected: dict) -> None:
    for (name, extra), wanted in expected.items():
        got = value(collector, name, **RUN, gpu="0", uuid=UUID, **dict(extra))
        assert got == pytest.approx(wanted, rel=1e-12, abs=1e-12), (name, extra)


@pytest.mark.parametrize("position", [IDLE, LOAD], ids=["idle", "load"])
def test_every_series_from_the_replayed_h200(probe: dict, position: int) -> None:
    collector, _ = ticked_at(probe, position)
    assert_series(collector, expected_series(probe, position))
    info = samples(collector, "trainmon_gpu_info")
    assert info == [({**RUN, "gpu": "0", "uuid": UUID, "name": "NVIDIA H200", "driver_version": "580.159.04",
                      "pci_bus_id": "00000000:00:06.0"}, 1.0)]
    reasons = samples(collector, "trainmon_gpu_clock_event_active")
    assert len(reasons) == 9 and {labels["reason"] for labels, _ in reasons} >= {"sw_power_cap", "hw_slowdown"}


def test_idle_and_load_readings_tell_apart(probe: dict) -> None:
    idle, _ = ticked_at(probe, IDLE)
    load, _ = ticked_at(probe, LOAD)
    # the recorded idle H200: nothing runs, ~79 W, 345 MHz
    assert value(idle, "trainmon_gpu_utilization_ratio") == 0.0
    assert value(idle, "trainmon_gpu_sm_active_ratio") == 0.0
    assert value(idle, "trainmon_gpu_power_watts") == pytest.approx(78.77)
    assert value(idle, "trainmon_gpu_sm_clock_hertz") == 345e6
    assert samples(idle, "trainmon_gpu_process_memory_used_bytes") == []
    # under the bf16 matmul: SMs ~96 % busy, tensor pipes ~93 %, occupancy ~14 %, power at the 700 W cap
    assert value(load, "trainmon_gpu_utilization_ratio") == 1.0
    assert value(load, "trainmon_gpu_sm_active_ratio") == pytest.approx(0.9613)
    assert value(load, "trainmon_gpu_tensor_active_ratio") > 0.9
    assert value(load, "trainmon_gpu_sm_occupancy_ratio") == pytest.approx(0.1421)
    assert value(load, "trainmon_gpu_power_watts") / value(load, "trainmon_gpu_power_limit_watts") > 0.98
    assert value(load, "trainmon_gpu_process_memory_used_bytes", pid=str(probe["my_pid"])) == 1050673152


def test_gpm_needs_two_samples_allocated_once_and_swapped(probe: dict) -> None:
    source = ReplaySource(probe, position=LOAD)
    collector = GpuCollector(RUN, source=source)
    collector.tick()
    assert "trainmon_gpu_sm_active_ratio" not in names(collector)  # one sample: no GPM interval yet
    assert "trainmon_gpu_utilization_ratio" in names(collector)
    for _ in range(5):
        source.advance()
        collector.tick()
    assert "trainmon_gpu_sm_active_ratio" in names(collector)
    assert source.calls["gpm_sample_alloc"] == 2
    assert source.calls["gpm_sample_get"] == 6 and source.calls["gpm_metrics"] == 5
    collector.close()
    assert source.calls["gpm_sample_free"] == 2 and source.calls["shutdown"] == 1


def test_slow_pcie_throughput_call_is_never_made(probe: dict) -> None:
    collector, source = ticked_at(probe, LOAD)
    # PCIe bytes/s come from GPM; nvmlDeviceGetPcieThroughput (21 ms) is not part of the source at all
    assert not hasattr(source, "pcie_throughput")
    assert "trainmon_gpu_pcie_bytes_per_second" in names(collector)


def unsupported_card(probe: dict) -> dict:
    """The H200 recording with what consumer or older cards lack: ECC, memory temperature, occupancy, replays."""
    data = copy.deepcopy(probe)
    not_supported = {"error": "NVMLError_NotSupported: Not Supported"}
    data["calls"]["ecc_volatile_corrected"] = not_supported
    data["calls"]["ecc_volatile_uncorrected"] = not_supported
    data["field_values"]["NVML_FI_DEV_MEMORY_TEMP"]["ret"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    data["field_values"]["NVML_FI_DEV_PCIE_REPLAY_COUNTER"]["ret"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    data["gpm"]["idle"]["NVML_GPM_METRIC_SM_OCCUPANCY"]["ret"] = pynvml.NVML_ERROR_NOT_SUPPORTED
    return data


def test_not_supported_fields_are_omitted_and_not_retried(probe: dict) -> None:
    source = ReplaySource(unsupported_card(probe), position=LOAD - 1)
    collector = GpuCollector(RUN, source=source, energy_interval=0.0)
    for _ in range(4):
        collector.tick()
        source.advance()
    emitted = names(collector)
    for missing in ("trainmon_gpu_ecc_errors_total", "trainmon_gpu_memory_temperature_celsius",
                    "trainmon_gpu_pcie_replays_total", "trainmon_gpu_sm_occupancy_ratio"):
        assert missing not in emitted  # omitted, never exported as 0
    assert {"trainmon_gpu_sm_active_ratio", "trainmon_gpu_energy_joules_total",
            "trainmon_gpu_power_watts"} <= emitted
    assert collector.last_success
    # asked once, then remembered
    assert source.calls["ecc_errors"] == 1
    assert source.calls[f"field:{pynvml.NVML_FI_DEV_MEMORY_TEMP}"] == 1
    assert source.calls[f"field:{pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER}"] == 1
    assert source.calls[f"field:{pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION}"] == 4


def test_card_without_gpm_has_no_gpm_series(probe: dict) -> None:
    data = copy.deepcopy(probe)
    data["gpm"]["supported"]["isSupportedDevice"] = 0  # pre-Hopper
    source = ReplaySource(data, position=LOAD - 1)
    collector = GpuCollector(RUN, source=source)
    collector.tick()
    source.advance()
    collector.tick()
    assert not {name for name in names(collector) if "active_ratio" in name or "bytes_per_second" in name}
    assert "trainmon_gpu_utilization_ratio" in names(collector)
    assert source.calls["gpm_sample_alloc"] == 0 and source.calls["gpm_sample_get"] == 0


def test_energy_counter_read_only_every_energy_interval(probe: dict) -> None:
    clock = FakeClock()
    source = ReplaySource(probe, position=0)
    collector = GpuCollector(RUN, source=source, energy_interval=30.0, clock=clock)
    energy = f"field:{pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION}"
    series = probe["load_series"]

    collector.tick()
    assert source.calls[energy] == 1
    assert value(collector, "trainmon_gpu_energy_joules_total") == pytest.approx(series[0]["energy_mj"] / 1000)
    for position, step in zip(range(1, 6), (5.0, 5.0, 5.0, 10.0, 4.0), strict=True):  # within 29 s
        clock.now += step
        source.seek(position)
        collector.tick()
        assert value(collector, "trainmon_gpu_energy_joules_total") == pytest.approx(series[0]["energy_mj"] / 1000)
    assert source.calls[energy] == 1
    clock.now += 1.0  # 30 s since the last read
    source.seek(6)
    collector.tick()
    assert source.calls[energy] == 2
    assert value(collector, "trainmon_gpu_energy_joules_total") == pytest.approx(series[6]["energy_mj"] / 1000)
    assert source.calls["utilization"] == 7  # the cheap readings ran every tick


def test_energy_falls_back_to_direct_calls_without_field_values(probe: dict) -> None:
    class NoFieldValues(ReplaySource):
        def field_values(self, handle, field_ids):
            self.calls["field_values"] += 1
            raise pynvml.NVMLError_FunctionNotFound()

    source = NoFieldValues(probe, position=LOAD)
    collector = GpuCollector(RUN, source=source, energy_interval=0.0)
    collector.tick()
    collector.tick()
    assert value(collector, "trainmon_gpu_energy_joules_total") == probe["load_series"][LOAD]["energy_mj"] / 1000
    assert value(collector, "trainmon_gpu_pcie_replays_total") == 0.0
    assert "trainmon_gpu_memory_temperature_celsius" not in names(collector)
    assert source.calls["field_values"] == 1 and source.calls["total_energy"] == 2


@pytest.mark.parametrize("error", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_no_nvml_degrades_with_one_log_line(probe: dict, error: int, caplog: pytest.LogCaptureFixture) -> None:
    source = ReplaySource(probe, fail_init=error)
    collector = GpuCollector(RUN, source=source)
    with caplog.at_level(logging.INFO, logger="trainmon.exporter"):
        for _ in range(3):
            collector.tick()
    assert list(collector.collect()) == []
    assert collector.last_success is False  # the health series says the GPU collector has nothing
    assert source.calls["init"] == 1  # not retried
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 1 and "GPU metrics off: NVML is not available" in lines[0]


@pytest.mark.parametrize(("options", "reason"), [
    ({"mig": True}, "MIG"),
    ({"devices": 0}, "no GPU"),
])
def test_mig_or_no_gpu_degrades(probe: dict, options: dict, reason: str, caplog: pytest.LogCaptureFixture) -> None:
    collector = GpuCollector(RUN, source=ReplaySource(probe, **options))
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        collector.tick()
        collector.tick()
    assert list(collector.collect()) == [] and not collector.last_success
    assert reason in collector.unavailable_reason
    assert len(caplog.records) == 1


def test_real_nvml_on_this_host_reports_or_degrades() -> None:
    """With the real library: a GPU host gets GPU series, any other host one log line and nothing."""
    collector = GpuCollector(RUN, source=NvmlSource())
    collector.tick()
    try:
        if collector.unavailable_reason is None:
            assert "trainmon_gpu_info" in names(collector) and collector.last_success
        else:
            assert list(collector.collect()) == [] and not collector.last_success
    finally:
        collector.close()


def test_visible_devices_follow_cuda_rules() -> None:
    uuids = ["GPU-aaaa-0", "GPU-bbbb-1", "GPU-cccc-2", "GPU-dddd-3"]
    assert visible_devices(None, uuids) == [0, 1, 2, 3]
    assert visible_devices("", uuids) == []
    assert visible_devices("2,0", uuids) == [2, 0]
    assert visible_devices("GPU-cccc,GPU-aaaa-0", uuids) == [2, 0]
    assert visible_devices("1,7,2", uuids) == [1]  # the list ends at the first invalid entry
    assert visible_devices("-1", uuids) == []
    assert visible_devices("GPU-", uuids) == []  # ambiguous prefix
    with pytest.raises(GpuUnavailable, match="MIG"):
        visible_devices("MIG-1234", uuids)


def test_devices_for_rank() -> None:
    assert devices_for_rank([0, 1, 2, 3], local_rank=0, local_world_size=1) == [0, 1, 2, 3]
    assert devices_for_rank([0, 1, 2, 3], local_rank=2, local_world_size=4) == [2]
    assert devices_for_rank([3, 1], local_rank=1, local_world_size=2) == [1]
    assert devices_for_rank([5], local_rank=3, local_world_size=8) == [5]  # each rank has its own device
    assert devices_for_rank([0, 1], local_rank=3, local_world_size=4) == []


def reported_gpus(probe: dict, monkeypatch: pytest.MonkeyPatch, cuda_visible: str | None, local_rank: int,
                  local_world_size: int) -> list[str]:
    if cuda_visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", cuda_visible)
    collector = GpuCollector(RUN, source=ReplaySource(probe, devices=4), local_rank=local_rank,
                             local_world_size=local_world_size)
    collector.tick()
    return sorted(labels["gpu"] for labels, _ in samples(collector, "trainmon_gpu_info"))


def test_rank_selection_reports_each_gpu_once(probe: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    every_rank = [gpu for rank in range(4) for gpu in reported_gpus(probe, monkeypatch, None, rank, 4)]
    assert sorted(every_rank) == ["0", "1", "2", "3"]
    assert reported_gpus(probe, monkeypatch, None, 0, 1) == ["0", "1", "2", "3"]
    assert reported_gpus(probe, monkeypatch, "3,1", 1, 2) == ["1"]
    uuid_of_2 = ReplaySource(probe, devices=4)
    uuid_of_2.init()
    assert reported_gpus(probe, monkeypatch, uuid_of_2.uuid(uuid_of_2.handle(2)), 3, 4) == ["2"]
    assert reported_gpus(probe, monkeypatch, None, 5, 8) == []


def test_children_gpu_memory_counts_only_the_trainer_family(probe: dict, tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        data = copy.deepcopy(probe)
        data["load_series"][LOAD]["procs"] = [[os.getpid(), 4096], [child.pid, 8192], [1, 1 << 30]]
        source = ReplaySource(data, position=LOAD)
        collector = GpuCollector(RUN, source=source)
        collector.tick()
        found = {labels["pid"]: used for labels, used in samples(collector, "trainmon_gpu_process_memory_used_bytes")}
        assert found == {str(os.getpid()): 4096, str(child.pid): 8192}  # pid 1 is not ours
    finally:
        child.kill()
        child.wait()


def test_exposition_passes_promtool(probe: dict) -> None:
    promtool = require_binary("promtool")
    collector, _ = ticked_at(probe, LOAD)
    system = SystemCollector(RUN)
    process = ProcessCollector(RUN)
    registry = CollectorRegistry()
    for each in (collector, system, process):
        each.tick()
        registry.register(each)
    exposition = generate_latest(registry)
    assert b"trainmon_gpu_sm_active_ratio" in exposition and b"trainmon_host_load1" in exposition
    assert b"trainmon_process_cpu_seconds_total" in exposition
    result = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()


@pytest.mark.integration
def test_prometheus_scrapes_replayed_gpu(probe: dict) -> None:
    collector, _ = ticked_at(probe, LOAD)
    registry = CollectorRegistry()
    registry.register(collector)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    try:
        config = prometheus_config(scrape_config("trainer", [f"127.0.0.1:{port}"]))
        with run_prometheus(config) as prometheus:
            result = prometheus.wait_for('trainmon_gpu_sm_active_ratio{run_id="run-1"}')
            assert float(result[0]["value"][1]) == pytest.approx(probe["load_series"][LOAD]["gpm"]["SM_UTIL"] / 100)
            assert result[0]["metric"]["uuid"] == UUID and result[0]["metric"]["gpu"] == "0"
            power = prometheus.query("trainmon_gpu_power_watts / trainmon_gpu_power_limit_watts")
            assert float(power[0]["value"][1]) > 0.98
            wait_until(lambda: prometheus.query("trainmon_gpu_energy_joules_total"), what="energy counter")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_gpu_overhead_bench_runs_without_a_gpu(probe: dict) -> None:
    """bench/gpu_overhead.py --replay stays runnable here (its figures are for the note, not asserted)."""
    bench = REPO / "bench" / "gpu_overhead.py"
    result = subprocess.run([sys.executable, str(bench), "--replay", "--rounds", "1", "--seconds", "0.2",
                             "--ticks", "20"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(summary["ratio_vs_off"]) == set(summary["paired_ratio_vs_off"]) == {"off", "on_1hz", "on_5s"}
    assert summary["gpu_tick_ms_per_gpu"]["source"].startswith("replay path")


def test_gpu_scrape_bench_saves_idle_and_loaded_series(tmp_path: Path) -> None:
    """bench/gpu_scrape.py --replay: the GPU series of a real scrape, idle and in the recorded load phase."""
    bench = REPO / "bench" / "gpu_scrape.py"
    result = subprocess.run([sys.executable, str(bench), str(tmp_path), "--replay", "--seconds", "1"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr

    def series(name: str) -> dict[str, float]:
        lines = (tmp_path / name).read_text().splitlines()
        assert all(line.startswith(("# HELP trainmon_gpu_", "# TYPE trainmon_gpu_", "trainmon_gpu_",
                                    "trainmon_exporter_collector_")) for line in lines)
        return {line.partition("{")[0]: float(line.rpartition(" ")[2]) for line in lines
                if not line.startswith("#") and 'pipe="' not in line and 'reason="' not in line}

    idle, load = series("scrape_idle.txt"), series("scrape_load.txt")
    assert idle["trainmon_gpu_utilization_ratio"] == 0.0 and load["trainmon_gpu_utilization_ratio"] == 1.0
    assert load["trainmon_gpu_sm_active_ratio"] > 0.5 > idle["trainmon_gpu_sm_active_ratio"]
    assert load["trainmon_gpu_power_watts"] > idle["trainmon_gpu_power_watts"] + 100
    assert idle["trainmon_exporter_collector_success"] == load["trainmon_exporter_collector_success"] == 1.0


def test_gpu_lost_mid_run_degrades(probe: dict, caplog: pytest.LogCaptureFixture) -> None:
    class LosesTheGpu(ReplaySource):
        lost = False

        def utilization(self, handle):
            if self.lost:
                raise pynvml.NVMLError_GpuIsLost()
            return super().utilization(handle)

    source = LosesTheGpu(probe, position=LOAD)
    collector = GpuCollector(RUN, source=source)
    collector.tick()
    assert collector.last_success and "trainmon_gpu_power_watts" in names(collector)
    source.lost = True
    with caplog.at_level(logging.WARNING, logger="trainmon.exporter"):
        collector.tick()
        collector.tick()
    assert list(collector.collect()) == [] and not collector.last_success  # no stale readings of a lost GPU
    assert len(caplog.records) == 1 and "fell off the bus" in caplog.records[0].getMessage()
    assert source.calls["gpm_sample_free"] == 2 and source.calls["shutdown"] == 1


def test_failed_open_is_retried_without_leaking_nvml(probe: dict) -> None:
    class FlakyName(ReplaySource):
        failures = 1

        def name(self, handle):
            if handle.index == 1 and self.failures:
                self.failures -= 1
                raise pynvml.NVMLError_Unknown()
            return super().name(handle)

    source = FlakyName(probe, position=LOAD, devices=2)
    collector = GpuCollector(RUN, source=source)
    collector.tick()
    assert not collector.last_success and collector.unavailable_reason is None
    assert source.calls["init"] == 1 and source.calls["shutdown"] == 1
    assert source.calls["gpm_sample_alloc"] == source.calls["gpm_sample_free"] == 2  # GPU 0's, given back
    collector.tick()
    assert collector.last_success and collector.gpus == [0, 1]
    assert source.calls["init"] == 2
    assert source.calls["gpm_sample_alloc"] == 2 + 4


def test_rank_without_a_gpu_of_its_own_is_quiet_but_healthy(probe: dict, monkeypatch: pytest.MonkeyPatch,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    collector = GpuCollector(RUN, source=ReplaySource(probe, devices=4), local_rank=6, local_world_size=8)
    with caplog.at_level(logging.INFO, logger="trainmon.exporter"):
        collector.tick()
        collector.tick()
    assert list(collector.collect()) == []
    assert collector.last_success  # by the rule, not a fault: lower ranks report the 4 GPUs
    assert [record.levelno for record in caplog.records] == [logging.INFO]
    assert "local rank 6 of 8" in caplog.records[0].getMessage()


def test_nvml_source_marshals_pynvml_structures(probe: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """NvmlSource's own ctypes handling, with pynvml's real structures; only the driver calls are replaced."""
    import ctypes

    def field_values(handle, field_ids):
        values = (pynvml.c_nvmlFieldValue_t * len(field_ids))()
        recorded = {getattr(pynvml, name): entry for name, entry in probe["field_values"].items()}
        for slot, field_id in enumerate(field_ids):
            entry = recorded[field_id]
            values[slot].fieldId = field_id
            values[slot].nvmlReturn = entry["ret"]
            values[slot].valueType = entry["type"]
            values[slot].value.ullVal = entry["value"]["ullVal"]  # the union's widest member: every view agrees
        return values

    first = pynvml.struct_c_nvmlGpmSample_t()
    second = pynvml.struct_c_nvmlGpmSample_t()
    sample1 = ctypes.cast(ctypes.pointer(first), pynvml.c_nvmlGpmSample_t)
    sample2 = ctypes.cast(ctypes.pointer(second), pynvml.c_nvmlGpmSample_t)
    idle = {getattr(pynvml, name): entry for name, entry in probe["gpm"]["idle"].items()}

    def metrics_get(request):
        assert request.version == pynvml.NVML_GPM_METRICS_GET_VERSION
        assert ctypes.addressof(request.sample1.contents) == ctypes.addressof(first)
        assert ctypes.addressof(request.sample2.contents) == ctypes.addressof(second)
        for slot in range(request.numMetrics):
            entry = idle[request.metrics[slot].metricId]
            request.metrics[slot].nvmlReturn = entry["ret"]
            request.metrics[slot].value = entry["value"]
        return request

    monkeypatch.setattr(pynvml, "nvmlDeviceGetFieldValues", field_values)
    monkeypatch.setattr(pynvml, "nvmlGpmMetricsGet", metrics_get)
    source = NvmlSource()
    wanted = [pynvml.NVML_FI_DEV_MEMORY_TEMP, pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
              pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, pynvml.NVML_FI_DEV_POWER_INSTANT]
    assert source.field_values(None, wanted) == [(0, 35.0), (0, 3108020.0), (pynvml.NVML_ERROR_NOT_SUPPORTED, 0.0),
                                                 (0, 79071.0)]
    metric_ids = [pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC, pynvml.NVML_GPM_METRIC_PCIE_TX,
                  pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL]
    assert source.gpm_metrics(sample1, sample2, metric_ids) == [
        (0, probe["gpm"]["idle"]["NVML_GPM_METRIC_PCIE_RX_PER_SEC"]["value"]),
        (pynvml.NVML_ERROR_INVALID_ARGUMENT, 0.0),
        (0, probe["gpm"]["idle"]["NVML_GPM_METRIC_DRAM_BW_UTIL"]["value"])]
