"""The NVML seam of the GPU collector: the few NVML calls it makes (`NvmlSourceProtocol`), and `NvmlSource`.

`NvmlSource` raises `pynvml.NVMLError` subclasses exactly as NVML does (e.g. `NVMLError_NotSupported`). Values
come back in NVML's own units (%, mW, mJ, MHz, MiB/s); the collector converts them. A replayed H200 for tests and
the demo lives outside the package, in the repository's devtools/nvml_replay.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import pynvml

#: One result of a batched read (`field_values`, `gpm_metrics`): NVML's return code and the value when it is 0.
Reading = tuple[int, float]


class NvmlSourceProtocol(Protocol):
    """The NVML calls the GPU collector needs; handles are opaque."""

    def init(self) -> None: ...
    def shutdown(self) -> None: ...
    def driver_version(self) -> str: ...
    def device_count(self) -> int: ...
    def handle(self, index: int) -> Any: ...
    def name(self, handle: Any) -> str: ...
    def uuid(self, handle: Any) -> str: ...
    def pci_bus_id(self, handle: Any) -> str: ...
    def mig_enabled(self, handle: Any) -> bool: ...
    def utilization(self, handle: Any) -> tuple[int, int]: ...          # (gpu %, memory %)
    def memory(self, handle: Any) -> tuple[int, int, int]: ...          # (total, free, used) bytes
    def temperature(self, handle: Any) -> int: ...                       # GPU die, Celsius
    def power_usage(self, handle: Any) -> int: ...                       # mW
    def power_limit(self, handle: Any) -> int: ...                       # enforced limit, mW
    def clocks(self, handle: Any) -> tuple[int, int]: ...                # (SM, memory) MHz
    def clock_event_reasons(self, handle: Any) -> int: ...               # bit mask, nvmlClocksEventReason*
    def ecc_errors(self, handle: Any) -> tuple[int, int]: ...            # volatile (corrected, uncorrected)
    def pcie_replays(self, handle: Any) -> int: ...
    def total_energy(self, handle: Any) -> int: ...                      # mJ since driver load (slow: ~3 ms)
    def field_values(self, handle: Any, field_ids: Sequence[int]) -> list[Reading]: ...
    def gpm_supported(self, handle: Any) -> bool: ...
    def gpm_sample_alloc(self) -> Any: ...
    def gpm_sample_free(self, sample: Any) -> None: ...
    def gpm_sample_get(self, handle: Any, sample: Any) -> None: ...
    def gpm_metrics(self, first: Any, second: Any, metric_ids: Sequence[int]) -> list[Reading]: ...
    def compute_processes(self, handle: Any) -> list[tuple[int, int | None]]: ...  # (pid, used bytes or None)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


# nvmlValueType_t -> the member of c_nvmlValue_t that holds the value.
_VALUE_MEMBERS = {
    pynvml.NVML_VALUE_TYPE_DOUBLE: "dVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: "uiVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: "ulVal",
    pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: "ullVal",
    pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: "sllVal",
    getattr(pynvml, "NVML_VALUE_TYPE_SIGNED_INT", 5): "siVal",
    getattr(pynvml, "NVML_VALUE_TYPE_UNSIGNED_SHORT", 6): "usVal",
}


class NvmlSource:
    """The real thing: `pynvml` from the `nvidia-ml-py` distribution."""

    def init(self) -> None:
        pynvml.nvmlInit()

    def shutdown(self) -> None:
        pynvml.nvmlShutdown()

    def driver_version(self) -> str:
        return _text(pynvml.nvmlSystemGetDriverVersion())

    def device_count(self) -> int:
        return pynvml.nvmlDeviceGetCount()

    def handle(self, index: int) -> Any:
        return pynvml.nvmlDeviceGetHandleByIndex(index)

    def name(self, handle: Any) -> str:
        return _text(pynvml.nvmlDeviceGetName(handle))

    def uuid(self, handle: Any) -> str:
        return _text(pynvml.nvmlDeviceGetUUID(handle))

    def pci_bus_id(self, handle: Any) -> str:
        return _text(pynvml.nvmlDeviceGetPciInfo(handle).busId)

    def mig_enabled(self, handle: Any) -> bool:
        try:
            current, _pending = pynvml.nvmlDeviceGetMigMode(handle)
        except pynvml.NVMLError_NotSupported:
            return False
        return current == pynvml.NVML_DEVICE_MIG_ENABLE

    def utilization(self, handle: Any) -> tuple[int, int]:
        rates = pynvml.nvmlDeviceGetUtilizationRates(handle)
        return rates.gpu, rates.memory

    def memory(self, handle: Any) -> tuple[int, int, int]:
        info = pynvml.nvmlDeviceGetMemoryInfo(handle)
        return info.total, info.free, info.used

    def temperature(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)

    def power_usage(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetPowerUsage(handle)

    def power_limit(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetEnforcedPowerLimit(handle)

    def clocks(self, handle: Any) -> tuple[int, int]:
        return (pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM),
                pynvml.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM))

    def clock_event_reasons(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetCurrentClocksEventReasons(handle)

    def ecc_errors(self, handle: Any) -> tuple[int, int]:
        def count(kind: int) -> int:
            return pynvml.nvmlDeviceGetTotalEccErrors(handle, kind, pynvml.NVML_VOLATILE_ECC)

        return count(pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED), count(pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED)

    def pcie_replays(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetPcieReplayCounter(handle)

    def total_energy(self, handle: Any) -> int:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)

    def field_values(self, handle: Any, field_ids: Sequence[int]) -> list[Reading]:
        results: list[Reading] = []
        for entry in pynvml.nvmlDeviceGetFieldValues(handle, list(field_ids)):
            if entry.nvmlReturn != pynvml.NVML_SUCCESS:
                results.append((entry.nvmlReturn, 0.0))
                continue
            member = _VALUE_MEMBERS.get(entry.valueType, "ullVal")
            results.append((pynvml.NVML_SUCCESS, float(getattr(entry.value, member))))
        return results

    def gpm_supported(self, handle: Any) -> bool:
        try:
            return bool(pynvml.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
        except (pynvml.NVMLError_NotSupported, pynvml.NVMLError_FunctionNotFound):
            return False

    def gpm_sample_alloc(self) -> Any:
        return pynvml.nvmlGpmSampleAlloc()

    def gpm_sample_free(self, sample: Any) -> None:
        pynvml.nvmlGpmSampleFree(sample)

    def gpm_sample_get(self, handle: Any, sample: Any) -> None:
        pynvml.nvmlGpmSampleGet(handle, sample)

    def gpm_metrics(self, first: Any, second: Any, metric_ids: Sequence[int]) -> list[Reading]:
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(metric_ids)
        request.sample1 = first
        request.sample2 = second
        for slot, metric_id in enumerate(metric_ids):
            request.metrics[slot].metricId = metric_id
        pynvml.nvmlGpmMetricsGet(request)
        return [(request.metrics[slot].nvmlReturn, float(request.metrics[slot].value))
                for slot in range(len(metric_ids))]

    def compute_processes(self, handle: Any) -> list[tuple[int, int | None]]:
        return [(process.pid, process.usedGpuMemory)
                for process in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)]
