"""Read samples out of a prometheus_client collector in tests."""

from __future__ import annotations

from prometheus_client.registry import Collector


def samples(collector: Collector, name: str, **labels: str) -> list[tuple[dict[str, str], float]]:
    """(labels, value) of every sample called `name` whose labels include `labels`."""
    return [(dict(sample.labels), sample.value)
            for family in collector.collect() for sample in family.samples
            if sample.name == name and labels.items() <= sample.labels.items()]


def value(collector: Collector, name: str, **labels: str) -> float:
    """The one sample called `name` with `labels`; AssertionError when there is none or several."""
    found = samples(collector, name, **labels)
    assert len(found) == 1, f"expected one {name}{labels}, found {found}"
    return found[0][1]


def names(collector: Collector) -> set[str]:
    """Names of every sample the collector emits."""
    return {sample.name for family in collector.collect() for sample in family.samples}
