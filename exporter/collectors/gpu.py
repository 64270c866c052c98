"""GPU metrics from NVML: utilization, memory, power, energy, clocks, throttling, errors and GPM activity.

Cost per GPU per tick is kept to the cheap NVML calls (a few microseconds each) plus one GPM sample:
- `nvmlDeviceGetPcieThroughput` (~21 ms, it samples a 20 ms window) is never called: PCIe bytes/s come from
  GPM (`PCIE_TX/RX_PER_SEC`) on Hopper and newer;
- the energy counter (~3 ms per read) and the PCIe replay counter are read in one `nvmlDeviceGetFieldValues`
  batch every `energy_interval` seconds only; every scrape exports the last reading;
- GPM: two samples are allocated once and swapped each tick; the metrics are taken between the previous tick's
  sample and this one (no sleep), so the first tick has none;
- a reading the card answers NotSupported (or NoPermission) is remembered per GPU and never asked for again;
  it is omitted, never exported as 0.

Degraded modes (no NVML library or driver, no visible GPU, MIG enabled, a GPU lost mid-run): one log line, no
GPU series at all, and `trainmon_exporter_collector_success{collector="gpu"}` stays 0 (as node_exporter does for
a collector without data), so an alert can tell a node whose driver broke from an idle GPU. CPU-only trainers
turn the collector off (`TrainingMonitor(gpu=False)`). NVML is not retried once found missing. A local rank left
without a GPU of its own by the selection rule (more ranks than GPUs) also reports none, but that is the rule,
not a fault: one info line and success 1.

GPU selection: a single local process (`local_world_size` 1) reports every visible GPU; with several local
ranks, rank `local_rank` reports the GPU at position `local_rank` among the visible devices, so no GPU is
reported twice. "Visible" honours `CUDA_VISIBLE_DEVICES` (indices or `GPU-` UUID prefixes, CUDA's rules: the
list ends at the first invalid entry). When a rank sees exactly one GPU (launchers that give each rank its own
`CUDA_VISIBLE_DEVICES`, e.g. Slurm `--gpus-per-task=1`), it reports that GPU.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psutil
import pynvml
from prometheus_client.core import Metric

from .base import SampledCollector
from .families import Families
from .gpu_catalog import (
    CLOCK_EVENT_REASONS,
    FAST_FIELDS,
    GPM_SERIES,
    PERMANENT_ERRORS,
    PERMANENT_GPM_ERRORS,
    SLOW_FIELDS,
    GpmSeries,
    percent,
)
from .gpu_devices import GpuUnavailable, devices_for_rank, visible_devices
from .nvml_source import NvmlSource, NvmlSourceProtocol

log = logging.getLogger("trainmon.exporter")

__all__ = ["GpuCollector", "GpuUnavailable", "devices_for_rank", "visible_devices"]

@dataclass
class _Device:
    """One monitored GPU: identity, what it does not support, GPM samples and the slow readings."""

    index: int
    handle: Any
    uuid: str
    name: str
    pci_bus_id: str
    unsupported: set[str] = field(default_factory=set)
    fast_fields: list[int] = field(default_factory=lambda: list(FAST_FIELDS))
    slow_fields: list[int] = field(default_factory=lambda: list(SLOW_FIELDS))
    gpm_series: list[GpmSeries] = field(default_factory=list)
    gpm_previous: Any = None
    gpm_current: Any = None
    gpm_has_previous: bool = False
    slow_read_at: float | None = None
    energy_joules: float | None = None
    pcie_replays: float | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {"gpu": str(self.index), "uuid": self.uuid}


class GpuCollector(SampledCollector):
    """Per-GPU NVML readings, sampled in the background; see the module docstring for costs and rules."""

    name = "gpu"

    def __init__(self, run_labels: dict[str, str] | None = None, source: NvmlSourceProtocol | None = None,
                 local_rank: int = 0, local_world_size: int = 1, energy_interval: float = 30.0, *,
                 pid: int | None = None, clock: Callable[[], float] = time.monotonic):
        super().__init__(run_labels)
        if energy_interval < 0:
            raise ValueError(f"energy_interval must be >= 0 seconds, got {energy_interval!r}")
        self.source: NvmlSourceProtocol = source if source is not None else NvmlSource()
        self.local_rank = local_rank
        self.local_world_size = local_world_size
        self.energy_interval = energy_interval
        self.pid = pid if pid is not None else os.getpid()
        self._clock = clock
        self._devices: list[_Device] | None = None
        self._driver_version = ""
        self._initialised = False
        self.unavailable_reason: str | None = None
        self._unavailable_by_design = False
        self._descendants: dict[int, bool] = {}
        self._state_lock = threading.Lock()

    @property
    def gpus(self) -> list[int]:
        """NVML indices of the GPUs this collector reports (empty until the first tick, or when degraded)."""
        return [device.index for device in self._devices or []]

    # --- lifecycle ---

    def tick(self) -> None:
        super().tick()
        if self.unavailable_reason is not None and not self._unavailable_by_design:
            self.last_success = False

    def sample(self) -> list[Metric]:
        with self._state_lock:
            if self.unavailable_reason is not None:
                return []
            try:
                if self._devices is None:
                    self._devices = self._open_devices()
                out = Families(self.run_labels)
                now = self._clock()
                for device in self._devices:
                    self._sample_device(device, out, now)
                return out.collect()
            except GpuUnavailable as reason:
                self._give_up(str(reason), by_design=reason.by_design)
                return []
            except pynvml.NVMLError as error:
                if error.value == pynvml.NVML_ERROR_GPU_IS_LOST:
                    self._give_up(f"a GPU fell off the bus ({error})")
                    return []
                if self._devices is None:
                    self._release()  # opening failed half-way: the next tick starts from scratch
                raise

    def close(self) -> None:
        """Free the GPM samples and shut NVML down; a later tick opens it again."""
        with self._state_lock:
            self._release()

    def _give_up(self, reason: str, by_design: bool = False) -> None:
        self.unavailable_reason = reason
        self._unavailable_by_design = by_design
        log.log(logging.INFO if by_design else logging.WARNING, "trainmon: GPU metrics off: %s", reason)
        self._release()

    def _release(self) -> None:
        for device in self._devices or []:
            self._free_gpm(device)
        self._devices = None
        if self._initialised:
            self._initialised = False
            try:
                self.source.shutdown()
            except pynvml.NVMLError as error:
                log.debug("trainmon: NVML shutdown failed: %s", error)

    def _open_devices(self) -> list[_Device]:
        try:
            self.source.init()
        except pynvml.NVMLError as error:
            raise GpuUnavailable(f"NVML is not available ({error})") from error
        self._initialised = True
        count = self.source.device_count()
        if count == 0:
            raise GpuUnavailable("NVML sees no GPU")
        handles = [self.source.handle(index) for index in range(count)]
        uuids = [self.source.uuid(handle) for handle in handles]
        visible = visible_devices(os.environ.get("CUDA_VISIBLE_DEVICES"), uuids)
        if not visible:
            raise GpuUnavailable("no GPU is visible (CUDA_VISIBLE_DEVICES)")
        chosen = devices_for_rank(visible, self.local_rank, self.local_world_size)
        if not chosen:
            raise GpuUnavailable(f"local rank {self.local_rank} of {self.local_world_size} has no GPU of its own "
                                 f"among {len(visible)} visible; lower ranks report them", by_design=True)
        self._driver_version = self.source.driver_version()
        devices: list[_Device] = []
        try:
            for index in chosen:
                handle = handles[index]
                if self.source.mig_enabled(handle):
                    log.info("trainmon: GPU %d has MIG enabled; MIG devices are not monitored", index)
                    continue
                device = _Device(index, handle, uuids[index], self.source.name(handle),
                                 self.source.pci_bus_id(handle))
                devices.append(device)
                self._open_gpm(device)
        except pynvml.NVMLError:
            for device in devices:
                self._free_gpm(device)
            raise
        if not devices:
            raise GpuUnavailable("every GPU of this process has MIG enabled; MIG devices are not monitored")
        return devices

    # --- GPM ---

    def _open_gpm(self, device: _Device) -> None:
        if not self.source.gpm_supported(device.handle):
            return
        device.gpm_previous = self.source.gpm_sample_alloc()
        device.gpm_current = self.source.gpm_sample_alloc()
        device.gpm_series = list(GPM_SERIES)

    def _free_gpm(self, device: _Device) -> None:
        for sample in (device.gpm_previous, device.gpm_current):
            if sample is not None:
                try:
                    self.source.gpm_sample_free(sample)
                except pynvml.NVMLError as error:
                    log.debug("trainmon: freeing a GPM sample failed: %s", error)
        device.gpm_previous = device.gpm_current = None
        device.gpm_series = []
        device.gpm_has_previous = False

    def _sample_gpm(self, device: _Device, out: Families) -> None:
        if not device.gpm_series:
            return
        try:
            self.source.gpm_sample_get(device.handle, device.gpm_current)
            readings = (self.source.gpm_metrics(device.gpm_previous, device.gpm_current,
                                                [series.metric_id for series in device.gpm_series])
                        if device.gpm_has_previous else None)
        except pynvml.NVMLError as error:
            if error.value in PERMANENT_ERRORS:
                log.info("trainmon: GPM off for GPU %d: %s", device.index, error)
                self._free_gpm(device)
                return
            raise
        device.gpm_previous, device.gpm_current = device.gpm_current, device.gpm_previous
        device.gpm_has_previous = True
        if readings is None:
            return
        dropped: list[GpmSeries] = []
        for series, (ret, value) in zip(device.gpm_series, readings, strict=True):
            if ret == pynvml.NVML_SUCCESS:
                out.gauge(series.name, series.documentation, series.convert(value),
                          {**device.labels, **dict(series.labels)})
            elif ret in PERMANENT_GPM_ERRORS:
                dropped.append(series)
        if dropped:
            device.gpm_series = [series for series in device.gpm_series if series not in dropped]

    # --- one GPU ---

    def _read(self, device: _Device, what: str, call: Callable[[Any], Any]) -> Any:
        """`call(handle)`, or None when the card does not support it (remembered: not asked again)."""
        if what in device.unsupported:
            return None
        try:
            return call(device.handle)
        except pynvml.NVMLError as error:
            if error.value in PERMANENT_ERRORS:
                device.unsupported.add(what)
                return None
            raise

    def _read_fields(self, device: _Device, field_ids: list[int]) -> dict[int, float]:
        """One `nvmlDeviceGetFieldValues` batch; fields answering NotSupported leave `field_ids` for good."""
        if not field_ids:
            return {}
        results = self._read(device, "field_values", lambda handle: self.source.field_values(handle, field_ids))
        if results is None:
            return {}
        values: dict[int, float] = {}
        for field_id, (ret, value) in zip(list(field_ids), results, strict=True):
            if ret == pynvml.NVML_SUCCESS:
                values[field_id] = value
            elif ret in PERMANENT_ERRORS:
                field_ids.remove(field_id)
        return values

    def _read_slow(self, device: _Device, now: float) -> None:
        """Energy and PCIe replay counters, every `energy_interval` seconds (the energy read costs ~3 ms)."""
        if device.slow_read_at is not None and now - device.slow_read_at < self.energy_interval:
            return
        device.slow_read_at = now
        if "field_values" in device.unsupported:
            energy = self._read(device, "total_energy", self.source.total_energy)
            replays = self._read(device, "pcie_replays", self.source.pcie_replays)
        else:
            values = self._read_fields(device, device.slow_fields)
            energy = values.get(pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION)
            replays = values.get(pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER)
        if energy is not None:
            device.energy_joules = energy / 1000.0
        if replays is not None:
            device.pcie_replays = float(replays)

    def _sample_device(self, device: _Device, out: Families, now: float) -> None:
        labels = device.labels
        out.gauge("trainmon_gpu_info", "GPU identity (value 1).", 1.0,
                  {**labels, "name": device.name, "driver_version": self._driver_version,
                   "pci_bus_id": device.pci_bus_id})
        utilization = self._read(device, "utilization", self.source.utilization)
        if utilization is not None:
            out.gauge("trainmon_gpu_utilization_ratio",
                      "Fraction of time a kernel ran (NVML utilization.gpu; 1 even for a one-thread kernel).",
                      percent(utilization[0]), labels)
            out.gauge("trainmon_gpu_memory_utilization_ratio",
                      "Fraction of time device memory was read or written (NVML utilization.memory).",
                      percent(utilization[1]), labels)
        memory = self._read(device, "memory", self.source.memory)
        if memory is not None:
            total, free, used = memory
            out.gauge("trainmon_gpu_memory_used_bytes", "Device memory used.", used, labels)
            out.gauge("trainmon_gpu_memory_free_bytes", "Device memory free.", free, labels)
            out.gauge("trainmon_gpu_memory_total_bytes", "Device memory in total.", total, labels)
        temperature = self._read(device, "temperature", self.source.temperature)
        if temperature is not None:
            out.gauge("trainmon_gpu_temperature_celsius", "GPU die temperature.", temperature, labels)
        fields = self._read_fields(device, device.fast_fields)
        if pynvml.NVML_FI_DEV_MEMORY_TEMP in fields:
            out.gauge("trainmon_gpu_memory_temperature_celsius", "Device memory (HBM) temperature.",
                      fields[pynvml.NVML_FI_DEV_MEMORY_TEMP], labels)
        power = self._read(device, "power_usage", self.source.power_usage)
        if power is not None:
            out.gauge("trainmon_gpu_power_watts", "Power draw.", power / 1000.0, labels)
        limit = self._read(device, "power_limit", self.source.power_limit)
        if limit is not None:
            out.gauge("trainmon_gpu_power_limit_watts", "Enforced power limit.", limit / 1000.0, labels)
        self._read_slow(device, now)
        if device.energy_joules is not None:
            out.counter("trainmon_gpu_energy_joules_total",
                        "Energy used since the driver loaded (read every energy_interval seconds).",
                        device.energy_joules, labels)
        clocks = self._read(device, "clocks", self.source.clocks)
        if clocks is not None:
            out.gauge("trainmon_gpu_sm_clock_hertz", "SM clock.", clocks[0] * 1e6, labels)
            out.gauge("trainmon_gpu_memory_clock_hertz", "Memory clock.", clocks[1] * 1e6, labels)
        reasons = self._read(device, "clock_event_reasons", self.source.clock_event_reasons)
        if reasons is not None:
            for bit, reason in CLOCK_EVENT_REASONS:
                out.gauge("trainmon_gpu_clock_event_active",
                          "1 while this reason holds the clocks down (throttling; gpu_idle is benign).",
                          1.0 if reasons & bit else 0.0, {**labels, "reason": reason})
        ecc = self._read(device, "ecc_errors", self.source.ecc_errors)
        if ecc is not None:
            for kind, count in zip(("corrected", "uncorrected"), ecc, strict=True):
                out.counter("trainmon_gpu_ecc_errors_total", "ECC errors since the driver loaded (volatile).",
                            count, {**labels, "type": kind})
        if device.pcie_replays is not None:
            out.counter("trainmon_gpu_pcie_replays_total", "PCIe replays (link retransmissions).",
                        device.pcie_replays, labels)
        self._sample_gpm(device, out)
        processes = self._read(device, "compute_processes", self.source.compute_processes)
        for pid, used in processes or []:
            if used is not None and self._is_trainer(pid):
                out.gauge("trainmon_gpu_process_memory_used_bytes",
                          "GPU memory of the trainer process and its children.", used, {**labels, "pid": str(pid)})

    def _is_trainer(self, pid: int) -> bool:
        """The trainer itself or one of its descendants (cached per pid)."""
        if pid == self.pid:
            return True
        known = self._descendants.get(pid)
        if known is None:
            try:
                known = any(parent.pid == self.pid for parent in psutil.Process(pid).parents())
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                known = False
            if len(self._descendants) > 4096:
                self._descendants.clear()
            self._descendants[pid] = known
        return known
