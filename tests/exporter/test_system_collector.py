"""System and process collectors: exact values from recorded psutil readings, and a real psutil run."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import namedtuple
from typing import Any

import psutil
import pytest
from support.fixtures import PSUTIL_READINGS
from support.procs import wait_until
from support.samples import names, samples, value
from trainmon.exporter.collectors.process import ProcessCollector
from trainmon.exporter.collectors.system import SystemCollector, cpu_busy_ratio

READINGS = json.loads(PSUTIL_READINGS.read_text())
RUN = {"experiment": "exp", "run_id": "run-7", "rank": "0"}


def record(name: str, fields: dict[str, Any]) -> Any:
    """A psutil-shaped named tuple."""
    return namedtuple(name, fields)(**fields)


class RecordedHost:
    """The psutil functions SystemCollector uses, answering the recorded host readings; `advance()` steps."""

    def __init__(self, readings: list[dict]):
        self.readings = readings
        self.index = 0

    @property
    def now(self) -> dict:
        return self.readings[self.index]

    def advance(self) -> None:
        self.index += 1

    def cpu_times(self) -> Any:
        return record("scputimes", self.now["cpu_times"])

    def getloadavg(self) -> tuple[float, float, float]:
        return tuple(self.now["loadavg"])

    def virtual_memory(self) -> Any:
        return record("svmem", self.now["virtual_memory"])

    def swap_memory(self) -> Any:
        return record("sswap", self.now["swap_memory"])

    def disk_io_counters(self) -> Any:
        return record("sdiskio", self.now["disk_io_counters"])

    def net_io_counters(self, pernic: bool = False) -> dict[str, Any]:
        assert pernic, "the collector leaves loopback out, so it needs per-interface counters"
        return {nic: record("snetio", counters) for nic, counters in self.now["net_io_counters"].items()}


class RecordedProcess:
    """A psutil.Process answering one recorded reading."""

    def __init__(self, pid: int, reading: dict, children: list[dict] | None = None):
        self.pid = pid
        self.reading = reading
        self._children = children or []

    def oneshot(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()

    def is_running(self) -> bool:
        return not self.reading.get("gone")

    def _alive(self) -> dict:
        if self.reading.get("gone"):
            raise psutil.NoSuchProcess(self.pid)
        return self.reading

    def cpu_times(self) -> Any:
        reading = self._alive()
        return record("pcputimes", {"user": reading["user"], "system": reading["system"], "children_user": 0.0,
                                    "children_system": 0.0})

    def memory_info(self) -> Any:
        return record("pmem", {"rss": self._alive()["rss"], "vms": 0})

    def num_threads(self) -> int:
        return self.reading["threads"]

    def num_fds(self) -> int:
        return self.reading["fds"]

    def children(self, recursive: bool = False) -> list[RecordedProcess]:
        assert recursive, "dataloader workers' own children count too"
        return [RecordedProcess(child["pid"], child) for child in self._children]


class RecordedChild(RecordedProcess):
    """A child of the recorded trainer, answering the reading of its pid in whatever sample `source` is at now
    (gone once that sample does not list it)."""

    def __init__(self, source: RecordedPsutil, pid: int):
        super().__init__(pid, {})
        self.source = source

    @property
    def reading(self) -> dict:
        return next((child for child in self.source.sample["children"] if child["pid"] == self.pid), {"gone": True})

    @reading.setter
    def reading(self, _value: dict) -> None:
        pass


class RecordedTrainer(RecordedProcess):
    """The trainer: a long-lived psutil.Process, answering whatever sample `source` is at now."""

    def __init__(self, source: RecordedPsutil):
        super().__init__(source.recorded["pid"], {})
        self.source = source

    @property
    def sample(self) -> dict:
        return self.source.sample

    def _alive(self) -> dict:
        return self.sample["trainer"]

    def num_threads(self) -> int:
        return self.sample["trainer"]["threads"]

    def num_fds(self) -> int:
        return self.sample["trainer"]["fds"]

    def children(self, recursive: bool = False) -> list[RecordedProcess]:
        assert recursive, "dataloader workers' own children count too"
        self.source.searches += 1
        return [RecordedChild(self.source, child["pid"]) for child in self.sample["children"]]


class RecordedPsutil:
    """`Process(pid)` answering the recorded trainer samples; `advance()` steps; `searches` counts the
    descendant searches (`children(recursive=True)`)."""

    def __init__(self, recorded: dict):
        self.recorded = recorded
        self.index = 0
        self.searches = 0

    @property
    def sample(self) -> dict:
        return self.recorded["samples"][self.index]

    def advance(self) -> None:
        self.index += 1

    def Process(self, pid: int) -> RecordedTrainer:  # noqa: N802 - psutil's name
        assert pid == self.recorded["pid"]
        return RecordedTrainer(self)


# --- exact values from recorded readings ---


def test_host_series_exact_values() -> None:
    host = RecordedHost(READINGS["host"])
    collector = SystemCollector(RUN, source=host)  # takes the first CPU reading
    host.advance()
    collector.tick()
    assert collector.last_success
    # CPU: user +6, system +2, idle +10, iowait +0.5, softirq +0.5, guest +1 (already inside user): 8.5 busy of 19
    assert value(collector, "trainmon_host_cpu_utilization_ratio", **RUN) == pytest.approx(8.5 / 19, rel=1e-12)
    assert value(collector, "trainmon_host_load1") == 1.5
    assert value(collector, "trainmon_host_load5") == 0.75
    assert value(collector, "trainmon_host_load15") == 0.25
    assert value(collector, "trainmon_host_memory_total_bytes") == 25276502016
    assert value(collector, "trainmon_host_memory_available_bytes") == 20000000000
    assert value(collector, "trainmon_host_swap_total_bytes") == 4294967296
    assert value(collector, "trainmon_host_swap_used_bytes") == 1048576
    assert value(collector, "trainmon_host_disk_read_bytes_total") == 1947067392
    assert value(collector, "trainmon_host_disk_written_bytes_total") == 2956753408
    # loopback left out: eth0 + ib0 only
    assert value(collector, "trainmon_host_network_received_bytes_total") == 192453971 + 7000000
    assert value(collector, "trainmon_host_network_transmitted_bytes_total") == 276640 + 5000000


def test_cpu_ratio_needs_time_to_pass() -> None:
    times = record("scputimes", READINGS["host"][0]["cpu_times"])
    assert cpu_busy_ratio(times, times) is None


def test_host_without_disks_or_load_average_omits_them() -> None:
    class Container(RecordedHost):
        def disk_io_counters(self) -> None:
            return None  # psutil's answer when /proc/diskstats lists nothing

        def getloadavg(self) -> tuple[float, float, float]:
            raise OSError("no load average here")

    host = Container(READINGS["host"])
    collector = SystemCollector(RUN, source=host)
    host.advance()
    collector.tick()
    emitted = names(collector)
    assert collector.last_success
    assert not {"trainmon_host_disk_read_bytes_total", "trainmon_host_load1"} & emitted
    assert {"trainmon_host_cpu_utilization_ratio", "trainmon_host_memory_total_bytes"} <= emitted


def test_process_series_exact_values_and_children_counter_never_decreases() -> None:
    source = RecordedPsutil(READINGS["process"])
    collector = ProcessCollector(RUN, source=source, pid=READINGS["process"]["pid"], children_interval=0)

    collector.tick()
    assert value(collector, "trainmon_process_cpu_seconds_total", process="trainer", **RUN) == 15.75
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 9.0
    assert value(collector, "trainmon_process_resident_memory_bytes", process="trainer") == 2147483648
    assert value(collector, "trainmon_process_resident_memory_bytes", process="children") == 2 * 524288000
    assert value(collector, "trainmon_process_threads") == 37
    assert value(collector, "trainmon_process_open_files") == 64
    assert value(collector, "trainmon_process_children") == 2

    source.advance()  # worker 5002 exited, 5003 started, 5004 vanished while being read
    collector.tick()
    assert value(collector, "trainmon_process_cpu_seconds_total", process="trainer") == 17.5
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 9.0 + 2.5 + 0.5
    assert value(collector, "trainmon_process_resident_memory_bytes", process="children") == 830000000
    assert value(collector, "trainmon_process_children") == 2
    assert value(collector, "trainmon_process_open_files") == 70

    source.advance()  # every worker gone: the children counter keeps what they used
    collector.tick()
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 12.0
    assert value(collector, "trainmon_process_children") == 0
    assert value(collector, "trainmon_process_resident_memory_bytes", process="children") == 0
    assert collector.last_success


def test_children_are_searched_every_children_interval_and_read_every_tick() -> None:
    """The search for descendants (a read of every process on the host) runs once per `children_interval`; in
    between the known children are read, an exited one drops out at once and a new one waits for the search."""
    source = RecordedPsutil(READINGS["process"])
    now = [100.0]
    collector = ProcessCollector(RUN, source=source, pid=READINGS["process"]["pid"], children_interval=10,
                                 clock=lambda: now[0])
    collector.tick()
    assert source.searches == 1 and value(collector, "trainmon_process_children") == 2

    source.advance()  # 5002 exited and 5003 started: 5001 is read again, 5003 is not found yet
    now[0] += 5
    collector.tick()
    assert source.searches == 1
    assert value(collector, "trainmon_process_children") == 1
    assert value(collector, "trainmon_process_resident_memory_bytes", process="children") == 530000000
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 9.0 + 2.5

    now[0] += 5  # the interval has passed: 5003 is found with all the CPU it used so far
    collector.tick()
    assert source.searches == 2
    assert value(collector, "trainmon_process_children") == 2
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 9.0 + 2.5 + 0.5

    source.advance()  # every worker gone: dropped without a search, the counter keeps what they used
    now[0] += 1
    collector.tick()
    assert source.searches == 2
    assert value(collector, "trainmon_process_children") == 0
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") == 12.0
    with pytest.raises(ValueError, match="children_interval"):
        ProcessCollector(RUN, source=source, children_interval=-1)


def test_process_collector_for_a_missing_pid_fails_its_tick_only() -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    collector = ProcessCollector(RUN, pid=dead.pid)
    collector.tick()  # never raises
    assert collector.last_success is False
    assert list(collector.collect()) == []


# --- a real psutil run against this process ---

BURN_THEN_SLEEP = ("import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass\n"
                   "time.sleep(60)\n")


def burn_cpu(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_real_psutil_counts_children_and_cpu_grows() -> None:
    collector = ProcessCollector(RUN, children_interval=0)
    collector.tick()
    trainer_before = value(collector, "trainmon_process_cpu_seconds_total", process="trainer")
    children_before = value(collector, "trainmon_process_children")
    child = subprocess.Popen([sys.executable, "-c", BURN_THEN_SLEEP])
    try:
        def child_used_cpu() -> bool:
            collector.tick()
            return value(collector, "trainmon_process_cpu_seconds_total", process="children") >= 0.25

        wait_until(child_used_cpu, timeout=60, what="the child's CPU seconds")
        assert value(collector, "trainmon_process_children") == children_before + 1
        searched_once = ProcessCollector(RUN, children_interval=3600)  # finds the child now, never searches again
        searched_once.tick()
        assert value(searched_once, "trainmon_process_children") == children_before + 1
        assert value(collector, "trainmon_process_resident_memory_bytes", process="children") > 0

        burn_cpu(0.15)  # /proc counts in 10 ms ticks: burn more than the 0.1 s asserted
        with tempfile.TemporaryFile() as a, tempfile.TemporaryFile() as b:
            assert a.fileno() != b.fileno()
            collector.tick()
            assert value(collector, "trainmon_process_cpu_seconds_total", process="trainer") >= trainer_before + 0.1
            me = psutil.Process()
            assert value(collector, "trainmon_process_open_files") >= 2 + 3  # stdio and the two files
            assert value(collector, "trainmon_process_threads") == me.num_threads()
            assert value(collector, "trainmon_process_resident_memory_bytes", process="trainer") > 10 * 2**20
    finally:
        child.kill()
        child.wait()
    collector.tick()
    assert value(collector, "trainmon_process_children") == children_before
    assert value(collector, "trainmon_process_cpu_seconds_total", process="children") >= 0.25  # kept
    searched_once.tick()  # the exited child drops out without a search
    assert value(searched_once, "trainmon_process_children") == children_before


def test_real_psutil_host_series() -> None:
    collector = SystemCollector(RUN)
    burn_cpu(0.05)
    collector.tick()
    assert collector.last_success
    ratio = value(collector, "trainmon_host_cpu_utilization_ratio", **RUN)
    assert 0.0 <= ratio <= 1.0
    assert value(collector, "trainmon_host_memory_total_bytes") == psutil.virtual_memory().total
    assert value(collector, "trainmon_host_load1") == pytest.approx(os.getloadavg()[0], abs=5.0)
    assert len(samples(collector, "trainmon_host_network_received_bytes_total")) == 1


def test_network_counters_survive_interfaces_coming_and_going() -> None:
    host = RecordedHost(READINGS["host"])
    collector = SystemCollector(RUN, source=host)
    received, transmitted = [], []
    for _ in range(3):
        host.advance()
        collector.tick()
        received.append(value(collector, "trainmon_host_network_received_bytes_total"))
        transmitted.append(value(collector, "trainmon_host_network_transmitted_bytes_total"))
    # ib0 gone and veth1 new: eth0 moved 100000000/100000 bytes, veth1 500/700; then eth0 restarted at 1000/2000
    assert received == [199453971, 199453971 + 100000000 + 500, 199453971 + 100000000 + 500 + 1000]
    assert transmitted == [5276640, 5276640 + 100000 + 700, 5276640 + 100000 + 700 + 2000]
    assert value(collector, "trainmon_host_cpu_utilization_ratio") == pytest.approx(1 / 4)
