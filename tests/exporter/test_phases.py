"""Phase timing: where a rank's time goes, exported per rank with a bounded set of labels."""

from __future__ import annotations

import time

import pytest
from prometheus_client import generate_latest
from trainmon.exporter import TrainingMonitor
from trainmon.exporter.phases import MAX_PHASES, OVERFLOW_PHASE

QUIET = {"port": False, "gpu": False, "system": False, "handle_signals": False, "mode": "disabled", "env": {}}


def phase_samples(monitor: TrainingMonitor) -> dict[tuple[str, str, str], float]:
    samples = {}
    for family in monitor.registry.collect():
        if family.name == "trainmon_phase_seconds":
            for sample in family.samples:
                samples[(sample.name, sample.labels["phase"], sample.labels["kind"])] = sample.value
    return samples


def test_phases_add_wall_seconds_and_counts_with_their_kind() -> None:
    with TrainingMonitor("phases", **QUIET) as monitor:
        for _ in range(3):
            with monitor.phase("forward"):
                time.sleep(0.01)
            with monitor.phase("all-reduce grads", waiting=True):
                time.sleep(0.002)
            with monitor.phase("sync_grads"):  # a waiting name by convention
                pass
        got = phase_samples(monitor)
    assert got[("trainmon_phase_seconds_count", "forward", "compute")] == 3
    assert 0.03 <= got[("trainmon_phase_seconds_sum", "forward", "compute")] < 0.5
    assert got[("trainmon_phase_seconds_count", "all_reduce_grads", "wait")] == 3
    assert got[("trainmon_phase_seconds_count", "sync_grads", "wait")] == 3
    text = generate_latest(monitor.registry).decode()
    assert 'trainmon_phase_seconds_sum{experiment="phases",kind="compute",phase="forward",rank="0"' in text


def test_phase_names_are_bounded_and_an_exception_still_counts() -> None:
    with TrainingMonitor("phases", **QUIET) as monitor:
        for index in range(MAX_PHASES + 5):
            with monitor.phase(f"p{index}"):
                pass
        with pytest.raises(RuntimeError), monitor.phase("p0"):
            raise RuntimeError("boom")
        with pytest.raises(ValueError, match="phase name"):
            monitor.phase("///")
        got = phase_samples(monitor)
    names = {name for (_sample, name, _kind) in got}
    assert len(names) == MAX_PHASES and OVERFLOW_PHASE in names
    assert got[("trainmon_phase_seconds_count", "p0", "compute")] == 2
    assert got[("trainmon_phase_seconds_count", OVERFLOW_PHASE, "compute")] == 6


def test_no_phase_no_series() -> None:
    with TrainingMonitor("phases", **QUIET) as monitor:
        assert phase_samples(monitor) == {}
