"""The metrics reference table (docs/metrics.md) matches what a real exporter emits: names, types and labels.

The exporter runs with every collector: training (steps, epoch, samples, tokens, checkpoint), health, system and
process from the real psutil, GPU from the replayed H200 NVML fixture (when the shared fixture is present).
Every emitted family must be documented; every documented one must be emitted, except those listed below.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import requests
from prometheus_client.parser import text_string_to_metric_families
from support.docs import code_spans, docs_page, section, table
from support.exporter import full_monitor
from support.procs import wait_until

RUN_LABELS = {"experiment", "run_id", "rank"}
# Documented but not emitted in this scenario, and why.
NOT_EMITTED_HERE = {
    "trainmon_gpu_process_memory_used_bytes": "the replayed fixture lists the recording's process, not this pid",
}


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    rows = {}
    for row in table(section(docs_page("metrics"), "Reference table")):
        (name,) = code_spans(row["name"])
        assert name not in rows, f"{name} documented twice"
        labels = row["labels"]
        rows[name] = (row["type"], frozenset(label.strip() for label in labels.split(",") if label.strip()))
    assert len(rows) > 40, "the metrics table was not found or not parsed"
    return rows


def parse(text: str) -> dict[str, tuple[str, frozenset[str]]]:
    families = {}
    for family in text_string_to_metric_families(text):
        name = family.name + ("_total" if family.type == "counter" else "")
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels)
        assert labels >= RUN_LABELS, f"{name} lacks the run labels"
        families[name] = (family.type, frozenset(labels - RUN_LABELS - {"quantile"}))
    return families


def emitted(wanted: Callable[[bool], set[str]]) -> tuple[dict[str, tuple[str, frozenset[str]]], bool]:
    """Scrape until every wanted family shows (rates such as GPM and CPU need two ticks) or 20 s passed."""
    with full_monitor("readme") as monitor:
        box: dict[str, tuple[str, frozenset[str]]] = {}

        def complete() -> bool:
            box.clear()
            box.update(parse(requests.get(monitor.metrics_url, timeout=5).text))
            return wanted(monitor.config.gpu) <= set(box)

        with contextlib.suppress(TimeoutError):
            wait_until(complete, timeout=20, interval=0.2, what="every documented family")
    return dict(box), monitor.config.gpu


def test_metrics_reference_table_matches_the_exporter() -> None:
    docs = documented()

    def wanted(with_gpu: bool) -> set[str]:
        return {name for name in docs if name not in NOT_EMITTED_HERE
                and (with_gpu or not name.startswith("trainmon_gpu_"))}

    real, with_gpu = emitted(wanted)
    undocumented = sorted(set(real) - set(docs))
    assert not undocumented, f"emitted but missing from docs/metrics.md's table: {undocumented}"
    mismatched = {name: {"documented": docs[name], "emitted": real[name]} for name in real if docs[name] != real[name]}
    assert not mismatched, f"type or labels differ: {mismatched}"
    missing = sorted(wanted(with_gpu) - set(real))
    assert not missing, f"documented in docs/metrics.md but not emitted: {missing}"
