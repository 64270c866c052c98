"""The promtool tests' input series look exactly like what a real Prometheus stores, so they cannot drift from it.

A real run (tests/stack/simulated_run.py: one rank scraped through the metadata API's http_sd, one pushing to a
real Pushgateway, the API itself scraped) is loaded into a real Prometheus with the repository's config. Every
input series of prometheus/tests/*_test.yml must then have a label set that occurs there for the same metric and
job: the same label names, no more, no fewer (values are the test's own). That is what caught the rules joining
push_time_seconds `on (experiment, run_id)`: a real Pushgateway labels it with the grouping key only.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator

import pytest
import requests
from repo_files import RULE_TESTS_DIR, load_yaml, rule_groups
from simulated_run import simulated_run
from support.procs import wait_until

pytestmark = pytest.mark.integration

SERIES = re.compile(r"^\s*(?P<name>[A-Za-z_:][\w:]*)\s*\{(?P<labels>.*)\}\s*$")
LABEL = re.compile(r'\s*(\w+)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
Signature = tuple[str, str | None, frozenset[str]]  # metric, job, label names


def parse_series(text: str) -> tuple[str, dict[str, str]]:
    match = SERIES.match(text)
    assert match, f"cannot parse input series {text!r}"
    body = match.group("labels")
    labels = dict(LABEL.findall(body))
    assert LABEL.sub("", body).strip() == "", f"cannot parse the labels of {text!r}"
    return match.group("name"), labels


def signature(name: str, labels: dict[str, str]) -> Signature:
    return name, labels.get("job"), frozenset(label for label in labels if label != "__name__")


def input_series() -> list[tuple[str, str]]:
    """(test file, series) for every input series of every promtool test file."""
    found = []
    for path in sorted(RULE_TESTS_DIR.glob("*_test.yml")):
        for case in load_yaml(path)["tests"]:
            found += [(path.name, item["series"]) for item in case.get("input_series", [])]
    return found


def recorded_names() -> set[str]:
    return {rule["record"] for group in rule_groups() for rule in group["rules"] if "record" in rule}


def real_signatures(prometheus_url: str, names: set[str]) -> dict[str, set[Signature]]:
    selector = "{__name__=~\"" + "|".join(sorted(names)) + "\"}"
    answer = requests.get(f"{prometheus_url}/api/v1/series", params={"match[]": selector}, timeout=10).json()
    by_name: dict[str, set[Signature]] = defaultdict(set)
    for labels in answer["data"]:
        by_name[labels["__name__"]].add(signature(labels["__name__"], labels))
    return by_name


@pytest.fixture(scope="module")
def real(postgres_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[Signature]]]:
    """The label sets a real Prometheus stores for every metric the promtool tests feed in."""
    names = {parse_series(series)[0] for _, series in input_series()} - recorded_names()
    with simulated_run(postgres_url, tmp_path_factory.mktemp("rule-inputs")) as run:
        box: list[dict[str, set[Signature]]] = []

        def complete() -> bool:
            box[:] = [real_signatures(run.prometheus.url, names)]
            return names <= set(box[0])

        try:
            wait_until(complete, timeout=30, what="every metric the promtool tests use")
        except TimeoutError:
            pytest.fail(f"the real stack never exported {sorted(names - set(box[0]))}: a promtool test feeds "
                        "series nothing produces")
        yield box[0]


def test_every_promtool_input_series_has_a_real_label_set(real: dict[str, set[Signature]]) -> None:
    wrong = []
    recorded = recorded_names()
    for file, series in input_series():
        name, labels = parse_series(series)
        if name in recorded:
            continue
        empty = sorted(label for label, value in labels.items() if value == "")
        if empty:
            wrong.append(f"{file}: {series}\n    empty label(s) {empty}: Prometheus stores no empty label")
        elif signature(name, labels) not in real[name]:
            options = "\n".join(f"      job={job}: {sorted(names)}" for _, job, names in sorted(real[name], key=str))
            wrong.append(f"{file}: {series}\n    real label sets of {name}:\n{options}")
    assert not wrong, "promtool input series no real Prometheus would hold:\n" + "\n".join(wrong)


def test_the_check_catches_the_pushgateway_experiment_label(real: dict[str, set[Signature]]) -> None:
    """What the old tests fed in: push_time_seconds with an experiment label. No real Pushgateway has it."""
    invented = {"job": "trainmon", "experiment": "exp", "run_id": "r", "rank": "0"}
    assert signature("push_time_seconds", invented) not in real["push_time_seconds"]
    assert signature("push_time_seconds", {"job": "trainmon", "run_id": "r", "rank": "0"}) in real["push_time_seconds"]


def test_parse_series() -> None:
    assert parse_series('up{job="a",instance="h:1"}') == ("up", {"job": "a", "instance": "h:1"})
    assert parse_series('run:x:rate1m{experiment="e", run_id="r"}')[0] == "run:x:rate1m"
    with pytest.raises(AssertionError):
        parse_series("up{job=a}")
