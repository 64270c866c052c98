"""Where a rank's time goes: ``with monitor.phase("forward"): ...`` accumulates wall seconds per phase.

Exported per rank as the summary ``trainmon_phase_seconds{phase, kind}`` (``_sum`` seconds, ``_count`` times
entered); ``kind`` is ``compute`` or ``wait`` (``phase(name, waiting=True)``, or a name that starts with
``wait``, ``sync``, ``comm``, ``barrier`` or ``allreduce``/``all_reduce``). Under synchronous data parallelism every
rank waits for the slowest at each collective, so step times even out and hide a slow rank; its *compute* time
per step does not: the straggler rule (prometheus/rules/training.yml) compares each rank's compute seconds per
step with its run's median rank.

Cost: entering and leaving a phase is two ``perf_counter`` calls and two additions on a cached object (under
1 us); at most `MAX_PHASES` names per monitor (labels stay bounded), further names are timed into ``other``.
A phase's kind is fixed when it is first used. A phase object is meant for one thread; phases of one name do not
nest.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping

from prometheus_client.core import Metric, SummaryMetricFamily
from trainmon.common.naming import normalize_key

MAX_PHASES = 32
OVERFLOW_PHASE = "other"
WAIT_PREFIXES = ("wait", "sync", "comm", "barrier", "allreduce", "all_reduce")
KINDS = ("compute", "wait")


class Phase:
    """A reusable context manager timing one phase."""

    __slots__ = ("name", "kind", "seconds", "count", "_started")

    def __init__(self, name: str, kind: str):
        self.name = name
        self.kind = kind
        self.seconds = 0.0
        self.count = 0
        self._started = 0.0

    def __enter__(self) -> Phase:
        self._started = time.perf_counter()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds += time.perf_counter() - self._started
        self.count += 1


class PhaseCollector:
    """Creates the phases of one monitor and exports their totals."""

    name = "phases"

    def __init__(self, run_labels: Mapping[str, str]):
        self.run_label_names = list(run_labels)
        self.run_values = [str(value) for value in run_labels.values()]
        self._phases: dict[object, Phase] = {}
        self._by_name: dict[str, Phase] = {}
        self._lock = threading.Lock()
        self.last_duration_seconds = 0.0
        self.last_success = True

    def phase(self, name: object, waiting: bool = False) -> Phase:
        """The timer of phase ``name`` (created on first use, its kind fixed then; the hot path is one lookup)."""
        found = self._phases.get(name)
        if found is not None:
            return found
        key = normalize_key(name)
        if key is None:
            raise ValueError(f"phase name {name!r} cannot be normalised to a usable label value")
        with self._lock:
            if key not in self._by_name and len(self._by_name) >= MAX_PHASES - 1:  # room kept for "other"
                key = OVERFLOW_PHASE
            phase = self._by_name.get(key)
            if phase is None:
                kind = "wait" if waiting or key.lower().startswith(WAIT_PREFIXES) else "compute"
                phase = self._by_name[key] = Phase(key, kind)
            self._phases[name] = phase
            return phase

    def collect(self) -> Iterable[Metric]:
        started = time.perf_counter()
        family = SummaryMetricFamily("trainmon_phase_seconds",
                                     "Wall seconds spent in each phase of the training step (sum) and times entered "
                                     "(count); kind: compute or wait", labels=[*self.run_label_names, "phase", "kind"])
        for phase in list(self._by_name.values()):
            family.add_metric([*self.run_values, phase.name, phase.kind], phase.count, phase.seconds)
        self.last_duration_seconds = time.perf_counter() - started
        return [family] if self._by_name else []
