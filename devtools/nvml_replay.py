"""Replays NVML readings recorded on a real H200 (`ReplaySource`): the GPU collector's NVML seam without a GPU.

For tests, the demo and the bench scripts (not shipped in the wheel). `ReplaySource` implements
`trainmon.exporter.collectors.nvml_source.NvmlSourceProtocol` over `nvml_probe.json` (see
`tests/fixtures/nvml-h200/README.md`) and steps through its `load_series` (idle, load, cool-down). It raises
`pynvml.NVMLError` subclasses exactly as NVML does (e.g. `NVMLError_NotSupported`), so the collector handles a
replayed card and a real one with the same code; values come back in NVML's own units.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pynvml
from trainmon.exporter.collectors.nvml_source import _VALUE_MEMBERS, Reading

from . import REPO

#: the recorded H200 (`tests/fixtures/nvml-h200/README.md`), for the demo and the bench scripts
H200_PROBE = REPO / "tests" / "fixtures" / "nvml-h200" / "nvml_probe.json"


@dataclass
class _ReplayHandle:
    index: int


@dataclass
class _ReplaySample:
    """A GPM sample: which `load_series` reading it was taken at, and when (None until `gpm_sample_get`)."""

    position: int | None = None
    taken: int = 0


def _field_id(name: str) -> int:
    return getattr(pynvml, name)


class ReplaySource:
    """Replays NVML readings recorded on a real H200 (`nvml_probe.json`); `seek`/`advance` step the load series.

    - Per-reading values (utilization, memory used, power, SM clock, temperature, energy, processes, GPM) come
      from `load_series[position]`; the rest (names, limits, memory clock, ECC, clock event reasons, memory
      temperature, PCIe replays) from the recorded `calls` and `field_values`. The fixture does not record clock
      event reasons per reading, so every position replays the idle reading (`GpuIdle`).
    - A call the card answered NotSupported (e.g. fan) raises `NVMLError_NotSupported`; fields answer the
      recorded return codes, and fields or GPM metrics the fixture does not hold answer NotSupported.
    - GPM: a sample remembers the position it was taken at; metrics between two samples are the recorded GPM
      values at the later one (PCIE_TX/PCIE_RX without PER_SEC answer the recorded return code 2).
    - `calls` counts every call by method name, so tests can check what a tick costs (e.g. energy reads).
    - `devices` > 1 replays the same card several times with distinct UUIDs (for rank-selection tests);
      `mig=True` reports MIG mode on; `fail_init` makes `init` raise that NVML error code.
    """

    def __init__(self, fixture: str | Path | dict, *, devices: int = 1, position: int = 0, mig: bool = False,
                 fail_init: int | None = None):
        self.data: dict = fixture if isinstance(fixture, dict) else json.loads(Path(fixture).read_text())
        self.series: list[dict] = self.data["load_series"]
        self.devices = devices
        self.position = position
        self.mig = mig
        self.fail_init = fail_init
        self.calls: Counter[str] = Counter()
        self.initialised = False

    # stepping through the recorded series

    def seek(self, position: int) -> None:
        if not 0 <= position < len(self.series):
            raise ValueError(f"position {position} outside the load series (0..{len(self.series) - 1})")
        self.position = position

    def advance(self) -> None:
        """Next reading of the series, wrapping around at its end."""
        self.position = (self.position + 1) % len(self.series)

    @property
    def reading(self) -> dict:
        return self.series[self.position]

    def _recorded(self, call: str) -> Any:
        entry = self.data["calls"][call]
        if "error" in entry:
            raise pynvml.NVMLError_NotSupported() if "NotSupported" in entry["error"] else pynvml.NVMLError_Unknown()
        return entry["value"]

    def _count(self, method: str) -> None:
        self.calls[method] += 1
        if not self.initialised and method not in ("init",):
            raise pynvml.NVMLError_Uninitialized()

    # the protocol

    def init(self) -> None:
        self.calls["init"] += 1
        if self.fail_init is not None:
            raise pynvml.NVMLError(self.fail_init)
        self.initialised = True

    def shutdown(self) -> None:
        self._count("shutdown")
        self.initialised = False

    def driver_version(self) -> str:
        self._count("driver_version")
        return self.data["driver"]

    def device_count(self) -> int:
        self._count("device_count")
        return self.devices

    def handle(self, index: int) -> _ReplayHandle:
        self._count("handle")
        if not 0 <= index < self.devices:
            raise pynvml.NVMLError_InvalidArgument()
        return _ReplayHandle(index)

    def name(self, handle: _ReplayHandle) -> str:
        self._count("name")
        return self._recorded("name")

    def uuid(self, handle: _ReplayHandle) -> str:
        self._count("uuid")
        recorded = self._recorded("uuid")
        return recorded if handle.index == 0 else f"{recorded[:-2]}{handle.index:02d}"

    def pci_bus_id(self, handle: _ReplayHandle) -> str:
        self._count("pci_bus_id")
        bus_id = self._recorded("pci")["busId"]
        return bus_id if handle.index == 0 else f"{bus_id[:-4]}{6 + handle.index:02X}.0"

    def mig_enabled(self, handle: _ReplayHandle) -> bool:
        self._count("mig_enabled")
        return self.mig or bool(self._recorded("mig_mode")[0])

    def utilization(self, handle: _ReplayHandle) -> tuple[int, int]:
        self._count("utilization")
        return self.reading["gpu_util"], self.reading["mem_util"]

    def memory(self, handle: _ReplayHandle) -> tuple[int, int, int]:
        self._count("memory")
        total = self._recorded("memory")["total"]
        used = self.reading["mem_used"]
        return total, total - used, used

    def temperature(self, handle: _ReplayHandle) -> int:
        self._count("temperature")
        return self.reading["temp"]

    def power_usage(self, handle: _ReplayHandle) -> int:
        self._count("power_usage")
        return self.reading["power_mw"]

    def power_limit(self, handle: _ReplayHandle) -> int:
        self._count("power_limit")
        return self._recorded("power_limit_mw")

    def clocks(self, handle: _ReplayHandle) -> tuple[int, int]:
        self._count("clocks")
        return self.reading["sm_clock"], self._recorded("clock_mem")

    def clock_event_reasons(self, handle: _ReplayHandle) -> int:
        self._count("clock_event_reasons")
        return self._recorded("nvmlDeviceGetCurrentClocksEventReasons")

    def ecc_errors(self, handle: _ReplayHandle) -> tuple[int, int]:
        self._count("ecc_errors")
        return self._recorded("ecc_volatile_corrected"), self._recorded("ecc_volatile_uncorrected")

    def pcie_replays(self, handle: _ReplayHandle) -> int:
        self._count("pcie_replays")
        return self._recorded("pcie_replay")

    def total_energy(self, handle: _ReplayHandle) -> int:
        self._count("total_energy")
        return self.reading["energy_mj"]

    def field_values(self, handle: _ReplayHandle, field_ids: Sequence[int]) -> list[Reading]:
        self._count("field_values")
        recorded = {_field_id(name): entry for name, entry in self.data["field_values"].items()}
        energy_fields = {pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, pynvml.NVML_FI_DEV_ENERGY}
        results: list[Reading] = []
        for field_id in field_ids:
            self.calls[f"field:{field_id}"] += 1
            entry = recorded.get(field_id)
            if entry is None:
                results.append((pynvml.NVML_ERROR_NOT_SUPPORTED, 0.0))
            elif entry["ret"] != pynvml.NVML_SUCCESS:
                results.append((entry["ret"], 0.0))
            elif field_id in energy_fields:
                results.append((pynvml.NVML_SUCCESS, float(self.reading["energy_mj"])))
            else:
                member = _VALUE_MEMBERS.get(entry["type"], "ullVal")
                results.append((pynvml.NVML_SUCCESS, float(entry["value"][member])))
        return results

    def gpm_supported(self, handle: _ReplayHandle) -> bool:
        self._count("gpm_supported")
        return bool(self.data["gpm"]["supported"]["isSupportedDevice"])

    def gpm_sample_alloc(self) -> _ReplaySample:
        self._count("gpm_sample_alloc")
        return _ReplaySample()

    def gpm_sample_free(self, sample: _ReplaySample) -> None:
        self._count("gpm_sample_free")

    def gpm_sample_get(self, handle: _ReplayHandle, sample: _ReplaySample) -> None:
        self._count("gpm_sample_get")
        sample.position = self.position
        sample.taken = self.calls["gpm_sample_get"]

    def gpm_metrics(self, first: _ReplaySample, second: _ReplaySample,
                    metric_ids: Sequence[int]) -> list[Reading]:
        self._count("gpm_metrics")
        if first.position is None or second.position is None:
            raise pynvml.NVMLError_InvalidArgument()
        later = second if second.taken >= first.taken else first
        values = self.series[later.position]["gpm"]
        idle_codes = {name.removeprefix("NVML_GPM_METRIC_"): entry["ret"]
                      for name, entry in self.data["gpm"]["idle"].items()}
        by_id = {getattr(pynvml, f"NVML_GPM_METRIC_{short}"): short for short in {*values, *idle_codes}}
        results: list[Reading] = []
        for metric_id in metric_ids:
            short = by_id.get(metric_id)
            if short is None:
                results.append((pynvml.NVML_ERROR_NOT_SUPPORTED, 0.0))
            elif idle_codes.get(short, pynvml.NVML_SUCCESS) != pynvml.NVML_SUCCESS:
                results.append((idle_codes[short], 0.0))
            else:
                results.append((pynvml.NVML_SUCCESS, float(values[short])))
        return results

    def compute_processes(self, handle: _ReplayHandle) -> list[tuple[int, int | None]]:
        self._count("compute_processes")
        return [(pid, used) for pid, used in self.reading["procs"]]
