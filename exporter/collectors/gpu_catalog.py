"""What the GPU collector asks NVML for: errors that are final, clock event reasons, GPM metrics and fields."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pynvml

MIB = 1024 * 1024

#: NVML errors that mean "this card will never answer this": remembered, never retried.
PERMANENT_ERRORS = frozenset({pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_NO_PERMISSION,
                              pynvml.NVML_ERROR_FUNCTION_NOT_FOUND})
#: GPM answers INVALID_ARGUMENT for metric ids this card or driver does not know.
PERMANENT_GPM_ERRORS = PERMANENT_ERRORS | {pynvml.NVML_ERROR_INVALID_ARGUMENT}

CLOCK_EVENT_REASONS: tuple[tuple[int, str], ...] = (
    (pynvml.nvmlClocksEventReasonGpuIdle, "gpu_idle"),
    (pynvml.nvmlClocksEventReasonApplicationsClocksSetting, "applications_clocks_setting"),
    (pynvml.nvmlClocksEventReasonSwPowerCap, "sw_power_cap"),
    (pynvml.nvmlClocksEventReasonHwSlowdown, "hw_slowdown"),
    (pynvml.nvmlClocksEventReasonSyncBoost, "sync_boost"),
    (pynvml.nvmlClocksEventReasonSwThermalSlowdown, "sw_thermal_slowdown"),
    (pynvml.nvmlClocksEventReasonHwThermalSlowdown, "hw_thermal_slowdown"),
    (pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"),
    (pynvml.nvmlClocksEventReasonDisplayClockSetting, "display_clock_setting"),
)


@dataclass(frozen=True)
class GpmSeries:
    """One GPM metric: where it goes and how NVML's unit becomes the base unit."""

    metric_id: int
    name: str
    documentation: str
    convert: Callable[[float], float]
    labels: tuple[tuple[str, str], ...] = ()


def percent(value: float) -> float:
    return value / 100.0


def _mib(value: float) -> float:
    return value * MIB


_PIPE_DOC = "Fraction of time the non-tensor FP pipe was active (GPM FP16/32/64_UTIL)."
_PCIE_DOC = "PCIe traffic in bytes per second (GPM PCIE_TX/RX_PER_SEC; tx = from the GPU)."
_NVLINK_DOC = "NVLink traffic over all links in bytes per second (GPM NVLINK_TOTAL_TX/RX_PER_SEC)."
_FP = "trainmon_gpu_pipe_active_ratio"
_PCIE = "trainmon_gpu_pcie_bytes_per_second"
_NVLINK = "trainmon_gpu_nvlink_bytes_per_second"
GPM_SERIES: tuple[GpmSeries, ...] = (
    GpmSeries(pynvml.NVML_GPM_METRIC_SM_UTIL, "trainmon_gpu_sm_active_ratio",
              "Fraction of SMs busy (GPM SM_UTIL).", percent),
    GpmSeries(pynvml.NVML_GPM_METRIC_SM_OCCUPANCY, "trainmon_gpu_sm_occupancy_ratio",
              "Resident warps over the theoretical maximum (GPM SM_OCCUPANCY).", percent),
    GpmSeries(pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL, "trainmon_gpu_tensor_active_ratio",
              "Fraction of time any tensor pipe was active (GPM ANY_TENSOR_UTIL).", percent),
    GpmSeries(pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL, "trainmon_gpu_dram_active_ratio",
              "DRAM bandwidth used over the theoretical maximum (GPM DRAM_BW_UTIL).", percent),
    GpmSeries(pynvml.NVML_GPM_METRIC_FP16_UTIL, _FP, _PIPE_DOC, percent, (("pipe", "fp16"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_FP32_UTIL, _FP, _PIPE_DOC, percent, (("pipe", "fp32"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_FP64_UTIL, _FP, _PIPE_DOC, percent, (("pipe", "fp64"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_PCIE_TX_PER_SEC, _PCIE, _PCIE_DOC, _mib, (("direction", "tx"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_PCIE_RX_PER_SEC, _PCIE, _PCIE_DOC, _mib, (("direction", "rx"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_TX_PER_SEC, _NVLINK, _NVLINK_DOC, _mib, (("direction", "tx"),)),
    GpmSeries(pynvml.NVML_GPM_METRIC_NVLINK_TOTAL_RX_PER_SEC, _NVLINK, _NVLINK_DOC, _mib, (("direction", "rx"),)),
)

FAST_FIELDS = (pynvml.NVML_FI_DEV_MEMORY_TEMP,)
SLOW_FIELDS = (pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER)
