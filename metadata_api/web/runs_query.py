"""The runs page's state, all of it in the query string (a URL shares the view):

| parameter | meaning |
| --- | --- |
| `project` | a project name; `experiment`: an experiment id |
| `q` | text in the run id, experiment name, host or command (case-insensitive) |
| `status` | RUNNING, COMPLETED, FAILED, CRASHED (repeated or comma-separated: any of them) |
| `tag` | `key` (the run has the tag) or `key=value` (repeated or comma-separated: all of them) |
| `where` | conditions joined by `and` or `;`, each `name op value` with op one of `< <= > >= = !=` (below) |
| `metrics`, `params` | extra columns: metric keys (last and min value) and parameter paths (`optimizer.lr`) |
| `sort`, `order` | a column (below), `asc` or `desc` |
| `page` | 1, 2, ... (50 runs a page) |

Sort columns: `start` (the default, newest first), `run`, `experiment`, `status`, `duration`, `host`, `ranks`,
`heartbeat`, `param:<path>`, `metric:<key>` (last value), `metric:<key>.min` or `.max`.

A condition's name is a parameter or a metric: `params.<path>` is a parameter (dotted path into nested params),
`metrics.<key>` a metric's last value (`metrics.<key>.min`, `.max`, `.last` for the others); a bare name ending in
`.min`, `.max` or `.last` is a metric, any other bare name is the parameter of that path when the run has it and
else the metric of that key (`lr < 1e-3` matches a run with param lr < 1e-3, or without one whose last logged lr
is). Values are numbers, or text for `=`/`!=` on parameters (quotes optional).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal
from urllib.parse import urlencode

from trainmon.common.naming import normalize_key
from trainmon.common.statuses import RUN_STATUSES

PAGE_SIZE = 50
MAX_COLUMNS = 12
MAX_CONDITIONS = 12
OPERATORS = ("<=", ">=", "!=", "==", "<", ">", "=")
AGGREGATES = ("last", "min", "max")
SORTABLE = ("start", "run", "experiment", "status", "duration", "host", "ranks", "heartbeat")
_PATH = re.compile(r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
_CONDITION = re.compile(r"^\s*(?P<name>[A-Za-z0-9_.:/-]+)\s*(?P<op><=|>=|!=|==|<|>|=)\s*(?P<value>.+?)\s*$")
_SPLIT = re.compile(r"\s*(?:;|\band\b|&&)\s*", re.IGNORECASE)

Kind = Literal["param", "metric", "either"]
_PREFIXES: dict[str, Kind] = {"params": "param", "param": "param", "metrics": "metric", "metric": "metric"}


class QueryError(ValueError):
    """A part of the query string that cannot be used; the page shows the message."""


@dataclass(frozen=True)
class Condition:
    kind: Kind
    name: str  # a parameter path, or a metric key (kind "either": both)
    aggregate: str  # for metrics: last, min or max
    op: str
    value: float | str

    @property
    def numeric(self) -> bool:
        return isinstance(self.value, float)


@dataclass(frozen=True)
class Sort:
    column: str  # one of SORTABLE, or "param" / "metric"
    name: str | None = None  # the parameter path or metric key
    aggregate: str = "last"
    descending: bool = True


@dataclass(frozen=True)
class RunsQuery:
    project: str | None = None
    experiment_id: int | None = None
    text: str | None = None
    statuses: tuple[str, ...] = ()
    tags: tuple[tuple[str, str | None], ...] = ()
    where: str = ""
    conditions: tuple[Condition, ...] = ()
    metrics: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    sort: Sort = field(default_factory=lambda: Sort("start"))
    page: int = 1

    @property
    def offset(self) -> int:
        return (self.page - 1) * PAGE_SIZE

    def url(self, **changes: object) -> str:
        """`/?...` for this state with `changes` applied (None removes a part); the page's links use it."""
        state = replace(self, **changes) if changes else self
        return "/?" + urlencode(state.as_params()) if state.as_params() else "/"

    def sorted_by(self, column: str) -> str:
        """The link of a column header: sort by it (descending first), or flip the order when already sorted."""
        wanted = parse_sort(column)
        same = (wanted.column, wanted.name, wanted.aggregate) == (self.sort.column, self.sort.name,
                                                                    self.sort.aggregate)
        descending = not self.sort.descending if same else wanted.column not in ("run", "experiment", "host")
        return self.url(sort=replace(wanted, descending=descending), page=1)

    def as_params(self) -> list[tuple[str, str]]:
        params: list[tuple[str, str]] = []
        if self.project:
            params.append(("project", self.project))
        if self.experiment_id is not None:
            params.append(("experiment", str(self.experiment_id)))
        if self.text:
            params.append(("q", self.text))
        params.extend(("status", status) for status in self.statuses)
        params.extend(("tag", key if value is None else f"{key}={value}") for key, value in self.tags)
        if self.where:
            params.append(("where", self.where))
        if self.metrics:
            params.append(("metrics", ",".join(self.metrics)))
        if self.params:
            params.append(("params", ",".join(self.params)))
        if self.sort != Sort("start"):
            params.append(("sort", sort_name(self.sort)))
            params.append(("order", "desc" if self.sort.descending else "asc"))
        if self.page > 1:
            params.append(("page", str(self.page)))
        return params


def sort_name(sort: Sort) -> str:
    if sort.column == "param":
        return f"param:{sort.name}"
    if sort.column == "metric":
        return f"metric:{sort.name}" + ("" if sort.aggregate == "last" else f".{sort.aggregate}")
    return sort.column


def parse_sort(text: str, order: str | None = None) -> Sort:
    descending = (order or "desc").lower() != "asc"
    if text in SORTABLE:
        return Sort(text, descending=descending)
    kind, _, name = text.partition(":")
    if kind == "param" and _PATH.match(name):
        return Sort("param", name, descending=descending)
    if kind == "metric" and name:
        key, aggregate = _metric_name(name)
        return Sort("metric", key, aggregate, descending)
    raise QueryError(f"sort: {text!r} is not a column (start, run, experiment, status, duration, host, ranks, "
                     "heartbeat, param:<path>, metric:<key>)")


def _metric_name(name: str) -> tuple[str, str]:
    """(normalised key, aggregate) of `key`, `key.min`, `key.max` or `key.last`."""
    base, _, suffix = name.rpartition(".")
    aggregate = suffix if base and suffix in AGGREGATES else "last"
    key = normalize_key(base if base and suffix in AGGREGATES else name)
    if key is None:
        raise QueryError(f"{name!r} is not a metric key")
    return key, aggregate


def parse_condition(text: str) -> Condition:
    match = _CONDITION.match(text)
    if match is None:
        raise QueryError(f"where: {text!r} is not 'name op value' (op one of < <= > >= = !=)")
    name, op, raw = match["name"], match["op"], match["value"]
    op = "=" if op == "==" else op
    value = _value(raw)
    prefix, _, rest = name.partition(".")
    kind = _PREFIXES.get(prefix.lower()) if rest else None
    if kind is not None:
        name = rest
    else:
        kind = "metric" if rest and name.rpartition(".")[2] in AGGREGATES else "either"
    if kind == "metric":
        key, aggregate = _metric_name(name)
        name = key
    else:
        aggregate = "last"
        if not _PATH.match(name):
            raise QueryError(f"where: {name!r} is not a parameter path (letters, digits, '_', '-', dots)")
        if kind == "either" and normalize_key(name) != name:
            kind = "param"  # a dotted path is no metric key
    if not isinstance(value, float) and (kind == "metric" or op not in ("=", "!=")):
        raise QueryError(f"where: {text!r} compares with text; only = and != do that, on parameters")
    return Condition(kind, name, aggregate, op, value)  # type: ignore[arg-type]


def _value(raw: str) -> float | str:
    unquoted = raw[1:-1] if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" else raw
    if unquoted is raw:
        try:
            number = float(raw)
        except ValueError:
            return raw
        if math.isfinite(number):
            return number
    return unquoted


def _split(values: Sequence[str]) -> list[str]:
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def parse(query: Mapping[str, Sequence[str]]) -> RunsQuery:
    """The state of a runs page from its query string (`{name: [values]}`); QueryError names the bad part."""

    def one(name: str) -> str | None:
        values = [v for v in query.get(name, ()) if v.strip()]
        return values[-1].strip() if values else None

    experiment = one("experiment")
    if experiment is not None and not experiment.isdigit():
        raise QueryError(f"experiment: {experiment!r} is not an experiment id")
    statuses = tuple(s.upper() for s in _split(query.get("status", ())))
    unknown = [s for s in statuses if s not in RUN_STATUSES]
    if unknown:
        raise QueryError(f"status: {unknown[0]!r} is not one of {', '.join(RUN_STATUSES)}")
    tags = []
    for raw in _split(query.get("tag", ())):
        key, equals, value = raw.partition("=")
        tags.append((key.strip(), value.strip() if equals else None))
    where = one("where") or ""
    conditions = tuple(parse_condition(part) for part in _SPLIT.split(where) if part.strip())
    metrics = []
    for raw in _split(query.get("metrics", ())):
        key = normalize_key(raw)
        if key is None:
            raise QueryError(f"metrics: {raw!r} is not a metric key")
        metrics.append(key)
    params = _split(query.get("params", ()))
    bad = [p for p in params if not _PATH.match(p)]
    if bad:
        raise QueryError(f"params: {bad[0]!r} is not a parameter path")
    if len(conditions) > MAX_CONDITIONS or len(metrics) > MAX_COLUMNS or len(params) > MAX_COLUMNS:
        raise QueryError(f"at most {MAX_CONDITIONS} conditions and {MAX_COLUMNS} metric or parameter columns")
    page = one("page") or "1"
    if not page.isdigit() or int(page) < 1:
        raise QueryError(f"page: {page!r} is not a page number")
    sort = parse_sort(one("sort") or "start", one("order"))
    return RunsQuery(project=one("project"), experiment_id=int(experiment) if experiment else None, text=one("q"),
                     statuses=tuple(dict.fromkeys(statuses)), tags=tuple(tags), where=where,
                     conditions=conditions, metrics=tuple(dict.fromkeys(metrics)), params=tuple(dict.fromkeys(params)),
                     sort=sort, page=min(int(page), 1_000_000))
