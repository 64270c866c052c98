"""The trainer process and its children (dataloader workers): CPU seconds, resident memory, threads, open files.

The source is any object with psutil's `Process(pid)` (by default the `psutil` module), so tests can feed exact
readings. Children are all descendants (`children(recursive=True)`). Finding them reads every process's
`/proc/<pid>/stat` (about 9 us a process: 3 ms a tick on a 16-core GPU host), so they are looked for every
`children_interval` seconds (default 10) and only the known ones are read in between: a worker that exits drops
out at the next tick, a new one shows up within `children_interval` with all the CPU it used so far, and a pid
reused by an unrelated process is dropped (psutil's create-time check). Their CPU counter sums, per child, the CPU
time it used while this collector saw it alive, so the counter never goes down when a worker exits (the CPU a
worker used after the last sample before its exit is not counted). Their resident memory is a plain sum (pages
shared with the trainer through fork are counted in each). Open files are open file descriptors (sockets and
pipes included; what `ulimit -n` limits); on Windows, open regular files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from typing import Any

import psutil
from prometheus_client.core import Metric

from .base import SampledCollector
from .families import Families

_GONE = (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied)


def cpu_seconds(process: Any) -> float:
    times = process.cpu_times()
    return times.user + times.system


def open_descriptors(process: Any) -> int:
    if hasattr(process, "num_fds"):
        return process.num_fds()
    return len(process.open_files())


class ProcessCollector(SampledCollector):
    """CPU, memory, threads and open files of the trainer (`pid`, default this process) and its children."""

    name = "process"

    def __init__(self, run_labels: Mapping[str, str] | None = None, source: Any = None, pid: int | None = None,
                 children_interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        super().__init__(run_labels)
        if children_interval < 0:
            raise ValueError(f"children_interval must be >= 0 seconds, got {children_interval!r}")
        self.source = source if source is not None else psutil
        self.pid = pid if pid is not None else os.getpid()
        self.children_interval = children_interval
        self._clock = clock
        self._process: Any = None
        self._known_children: list[Any] = []
        self._children_found_at: float | None = None
        self._children_cpu_seen: dict[int, float] = {}
        self._children_cpu_total = 0.0

    def _trainer(self) -> Any:
        if self._process is None:
            self._process = self.source.Process(self.pid)
        return self._process

    def _descendants(self, trainer: Any) -> list[Any]:
        """The descendants found by the last search, searching again once `children_interval` has passed."""
        now = self._clock()
        if self._children_found_at is None or now - self._children_found_at >= self.children_interval:
            self._known_children = trainer.children(recursive=True)
            self._children_found_at = now
        return self._known_children

    def _children(self, trainer: Any) -> tuple[int, float, float]:
        """(live children, CPU seconds of children so far, their resident bytes); updates the CPU account."""
        seen: dict[int, float] = {}
        live: list[Any] = []
        resident = 0.0
        for child in self._descendants(trainer):
            try:
                with child.oneshot():
                    if not child.is_running():  # exited, or its pid now belongs to another process
                        continue
                    used = cpu_seconds(child)
                    rss = child.memory_info().rss
            except _GONE:
                continue
            before = self._children_cpu_seen.get(child.pid, 0.0)
            self._children_cpu_total += used - before if used >= before else used
            seen[child.pid] = used
            live.append(child)
            resident += rss
        self._known_children = live
        self._children_cpu_seen = seen
        return len(seen), self._children_cpu_total, resident

    def sample(self) -> list[Metric]:
        trainer = self._trainer()
        with trainer.oneshot():
            trainer_cpu = cpu_seconds(trainer)
            trainer_rss = trainer.memory_info().rss
            threads = trainer.num_threads()
        descriptors = open_descriptors(trainer)
        children, children_cpu, children_rss = self._children(trainer)
        out = Families(self.run_labels)
        cpu_doc = "CPU time (user + system) of the trainer process, or of its children together."
        out.counter("trainmon_process_cpu_seconds_total", cpu_doc, trainer_cpu, {"process": "trainer"})
        out.counter("trainmon_process_cpu_seconds_total", cpu_doc, children_cpu, {"process": "children"})
        rss_doc = "Resident memory of the trainer process, or the sum over its children."
        out.gauge("trainmon_process_resident_memory_bytes", rss_doc, trainer_rss, {"process": "trainer"})
        out.gauge("trainmon_process_resident_memory_bytes", rss_doc, children_rss, {"process": "children"})
        out.gauge("trainmon_process_threads", "Threads of the trainer process.", threads)
        out.gauge("trainmon_process_open_files", "Open file descriptors of the trainer process.", descriptors)
        out.gauge("trainmon_process_children", "Live child processes of the trainer (dataloader workers, ...).",
                  children)
        return out.collect()
