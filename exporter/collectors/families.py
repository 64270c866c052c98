"""Build the metric families of one collector tick, with the run labels on every sample."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

_NO_LABELS: Mapping[str, str] = {}


class Families:
    """Families in first-use order; a family is created on its first sample, so an omitted reading leaves no trace.

    Every sample carries the run labels first, then its own labels (same names, same order, for one family).
    """

    def __init__(self, run_labels: Mapping[str, str]):
        self._run_names = list(run_labels)
        self._run_values = [str(value) for value in run_labels.values()]
        self._families: dict[str, Metric] = {}

    def gauge(self, name: str, documentation: str, value: float, labels: Mapping[str, str] = _NO_LABELS) -> None:
        self._add(GaugeMetricFamily, name, documentation, value, labels)

    def counter(self, name: str, documentation: str, value: float, labels: Mapping[str, str] = _NO_LABELS) -> None:
        """`name` ends in `_total`, as exposed; prometheus_client's family name drops the suffix."""
        self._add(CounterMetricFamily, name.removesuffix("_total"), documentation, value, labels)

    def _add(self, kind: type, name: str, documentation: str, value: float, labels: Mapping[str, str]) -> None:
        family = self._families.get(name)
        if family is None:
            family = kind(name, documentation, labels=[*self._run_names, *labels])
            self._families[name] = family
        family.add_metric([*self._run_values, *labels.values()], value)

    def collect(self) -> list[Metric]:
        return list(self._families.values())
