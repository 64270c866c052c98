"""Host metrics from psutil: CPU ratio, load, memory and swap, disk and network byte counters.

The source is any object with the psutil functions used here (`cpu_times`, `getloadavg`, `virtual_memory`,
`swap_memory`, `disk_io_counters`, `net_io_counters`); by default the `psutil` module itself, so tests can feed
exact readings. The CPU ratio is computed from `cpu_times()` deltas between ticks (no shared state with other
`psutil.cpu_percent` callers); the first reading is taken at construction. Network counters leave out loopback
interfaces and never go down when an interface disappears (see `InterfaceTotals`). A reading the host cannot
give (no disks in a container, no load average) is omitted.
Host series are meant to come from local rank 0 only (the wiring in `TrainingMonitor` decides).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import psutil
from prometheus_client.core import Metric

from .base import SampledCollector
from .families import Families

log = logging.getLogger("trainmon.exporter")

#: Fields of `cpu_times()` that are not busy time (psutil counts iowait as idle on Linux, as we do).
IDLE_FIELDS = ("idle", "iowait")
#: Fields already included in `user`/`nice` on Linux; adding them would count that time twice.
DOUBLE_COUNTED_FIELDS = ("guest", "guest_nice")


def cpu_busy_ratio(before: Any, after: Any) -> float | None:
    """Busy fraction of all CPUs between two `cpu_times()` readings; None when no time passed."""
    def split(times: Any) -> tuple[float, float]:
        fields = times._asdict()
        total = sum(value for name, value in fields.items() if name not in DOUBLE_COUNTED_FIELDS)
        idle = sum(fields.get(name, 0.0) for name in IDLE_FIELDS)
        return total, idle

    total_before, idle_before = split(before)
    total_after, idle_after = split(after)
    elapsed = total_after - total_before
    if elapsed <= 0:
        return None
    busy = elapsed - (idle_after - idle_before)
    return min(1.0, max(0.0, busy / elapsed))


def is_loopback(interface: str) -> bool:
    return interface == "lo" or interface.startswith("lo:") or interface.lower().startswith("loopback")


class InterfaceTotals:
    """Byte counters summed over interfaces that never go down when an interface vanishes (docker veths do).

    The first reading is the starting total; after that each interface adds what it moved since the last
    reading (its whole count when it is new or its counter restarted).
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[int, int]] = {}
        self._totals: list[int] | None = None

    def update(self, readings: Mapping[str, tuple[int, int]]) -> tuple[int, int]:
        if self._totals is None:
            self._totals = [sum(reading[0] for reading in readings.values()),
                            sum(reading[1] for reading in readings.values())]
        else:
            for nic, reading in readings.items():
                before = self._last.get(nic, (0, 0))
                for direction in (0, 1):
                    moved = reading[direction] - before[direction]
                    self._totals[direction] += moved if moved >= 0 else reading[direction]
        self._last = dict(readings)
        return self._totals[0], self._totals[1]


class SystemCollector(SampledCollector):
    """Host CPU, load, memory, swap, disk and network readings."""

    name = "system"

    def __init__(self, run_labels: Mapping[str, str] | None = None, source: Any = None):
        super().__init__(run_labels)
        self.source = source if source is not None else psutil
        self._cpu_before = self._try(self.source.cpu_times)
        self._network = InterfaceTotals()

    @staticmethod
    def _try(call: Any, *args: Any, **kwargs: Any) -> Any:
        """A psutil reading, or None where this host has none (psutil raises or returns None then)."""
        try:
            return call(*args, **kwargs)
        except (OSError, NotImplementedError, AttributeError, RuntimeError) as error:
            log.debug("trainmon: %s unavailable: %s", getattr(call, "__name__", call), error)
            return None

    def sample(self) -> list[Metric]:
        out = Families(self.run_labels)
        cpu = self._try(self.source.cpu_times)
        if cpu is not None and self._cpu_before is not None:
            ratio = cpu_busy_ratio(self._cpu_before, cpu)
            if ratio is not None:
                out.gauge("trainmon_host_cpu_utilization_ratio",
                          "Busy fraction of all CPUs since the previous sample.", ratio)
        if cpu is not None:
            self._cpu_before = cpu
        load = self._try(self.source.getloadavg)
        if load is not None:
            for minutes, value in zip((1, 5, 15), load, strict=True):
                out.gauge(f"trainmon_host_load{minutes}", f"Load average over {minutes} minute(s).", value)
        memory = self._try(self.source.virtual_memory)
        if memory is not None:
            out.gauge("trainmon_host_memory_total_bytes", "Physical memory in total.", memory.total)
            out.gauge("trainmon_host_memory_available_bytes",
                      "Memory available to new processes without swapping.", memory.available)
        swap = self._try(self.source.swap_memory)
        if swap is not None:
            out.gauge("trainmon_host_swap_total_bytes", "Swap space in total.", swap.total)
            out.gauge("trainmon_host_swap_used_bytes", "Swap space in use.", swap.used)
        disk = self._try(self.source.disk_io_counters)
        if disk is not None:
            out.counter("trainmon_host_disk_read_bytes_total", "Bytes read from disks.", disk.read_bytes)
            out.counter("trainmon_host_disk_written_bytes_total", "Bytes written to disks.", disk.write_bytes)
        nics = self._try(self.source.net_io_counters, pernic=True)
        if nics:
            received, transmitted = self._network.update(
                {nic: (counters.bytes_recv, counters.bytes_sent) for nic, counters in nics.items()
                 if not is_loopback(nic)})
            out.counter("trainmon_host_network_received_bytes_total",
                        "Bytes received on all network interfaces but loopback.", received)
            out.counter("trainmon_host_network_transmitted_bytes_total",
                        "Bytes sent on all network interfaces but loopback.", transmitted)
        return out.collect()
