"""The runs table of the dashboard: filter, sort and page runs in SQL, then fill in the page's 50 rows.

Never a scan of `metric_points`: a metric's last value is the point at the last step of the series' last block
(an index seek into `metric_blocks`, then one into `metric_points` by its unique key); its min and max come from
the block summaries. Two phases: `page_keys` finds the keys of one page (filters and sort evaluated for every
candidate run, so a metric condition or sort costs two index seeks a run), `page_rows` fills in that page only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from sqlalchemy import String, and_, case, cast, exists, func, literal, or_, select
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.sql import ColumnElement, Select

from ..db import decode_value
from ..models import Experiment, MetricBlock, MetricPoint, Project, Run, RunEndpoint, RunTag
from ..web.runs_query import PAGE_SIZE, Condition, RunsQuery, Sort

_COMPARE = {"<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__", "=": "__eq__", "!=": "__ne__"}


@dataclass
class MetricCell:
    last: float | None = None
    last_step: int | None = None
    min: float | None = None
    max: float | None = None


@dataclass
class RunRow:
    run: Run
    ranks: int | None
    params: dict[str, Any] = field(default_factory=dict)  # chosen path -> value (absent when the run has none)
    metrics: dict[str, MetricCell] = field(default_factory=dict)


def _param_path(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def param_number(dialect: str, path: str) -> ColumnElement:
    """The run's parameter at `path` when it is a JSON number, else NULL (never a failed cast)."""
    parts = _param_path(path)
    if dialect == "postgresql":
        node = Run.params[parts]
        return case((func.json_typeof(node) == "number", node.as_float()))
    json_path = "$." + ".".join(f'"{part}"' for part in parts)  # parts are [A-Za-z0-9_-]+ (runs_query)
    return case((func.json_type(Run.params, json_path).in_(("integer", "real")),
                 func.json_extract(Run.params, json_path)))


def param_text(dialect: str, path: str) -> ColumnElement:
    """The run's parameter at `path` as text (a JSON string's content, a number's digits)."""
    if dialect == "postgresql":
        return Run.params[_param_path(path)].as_string()
    json_path = "$." + ".".join(f'"{part}"' for part in _param_path(path))
    return cast(func.json_extract(Run.params, json_path), String)


def metric_value(key: str, aggregate: str) -> ColumnElement:
    """A correlated subquery: the run's last finite value of `key` (NULL when non-finite), or its finite min/max
    (of rank 0, the run's default view)."""
    of_series = (MetricBlock.run_key == Run.key, MetricBlock.rank == 0, MetricBlock.key == key)
    if aggregate == "last":
        last_step = (select(MetricBlock.last_step).where(*of_series).order_by(MetricBlock.block.desc()).limit(1)
                     .scalar_subquery())
        return (select(MetricPoint.value).where(MetricPoint.run_key == Run.key, MetricPoint.rank == 0,
                                                MetricPoint.key == key, MetricPoint.step == last_step)
                .scalar_subquery())
    extreme = func.min(MetricBlock.min_value) if aggregate == "min" else func.max(MetricBlock.max_value)
    return select(extreme).where(*of_series).scalar_subquery()


def _condition(dialect: str, condition: Condition) -> ColumnElement[bool]:
    compare = _COMPARE[condition.op]
    if not condition.numeric:  # text: = or != on a parameter
        return getattr(param_text(dialect, condition.name), compare)(condition.value)
    if condition.kind == "param":
        subject = param_number(dialect, condition.name)
    elif condition.kind == "metric":
        subject = metric_value(condition.name, condition.aggregate)
    else:
        subject = func.coalesce(param_number(dialect, condition.name), metric_value(condition.name, "last"))
    return getattr(subject, compare)(condition.value)


def like_pattern(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _filtered(dialect: str, query: RunsQuery, project_id: int | None, columns: Sequence[Any]) -> Select:
    statement = select(*columns).select_from(Run).join(Experiment, Experiment.id == Run.experiment_id)
    conditions: list[ColumnElement[bool]] = []
    if project_id is not None:
        conditions.append(Run.project_id == project_id)
    if query.project:
        conditions.append(Run.project_id == select(Project.id).where(Project.name == query.project)
                          .scalar_subquery())
    if query.experiment_id is not None:
        conditions.append(Run.experiment_id == query.experiment_id)
    if query.statuses:
        conditions.append(Run.status.in_(query.statuses))
    if query.text:
        pattern = like_pattern(query.text)
        conditions.append(or_(*(column.ilike(pattern, escape="\\") for column in
                                (Run.id, Experiment.name, Run.host, Run.command))))
    for key, value in query.tags:
        tagged = [RunTag.run_key == Run.key, RunTag.key == key]
        if value is not None:
            tagged.append(RunTag.value == value)
        conditions.append(exists().where(*tagged))
    conditions.extend(_condition(dialect, c) for c in query.conditions)
    return statement.where(and_(*conditions)) if conditions else statement


def _now_literal(dialect: str) -> Any:
    now = datetime.now(timezone.utc)
    return literal(now.replace(tzinfo=None).isoformat(sep=" ") if dialect == "sqlite" else now)


def _order(dialect: str, sort: Sort) -> list[ColumnElement]:
    """ORDER BY terms for `sort` (missing values last either way), then the newest run first as a tie-break."""
    if sort.column == "duration":
        end = func.coalesce(Run.end_time, _now_literal(dialect))
        terms = [func.julianday(end) - func.julianday(Run.start_time) if dialect == "sqlite" else end - Run.start_time]
    elif sort.column == "param":
        terms = [param_number(dialect, sort.name or ""), param_text(dialect, sort.name or "")]
    elif sort.column == "metric":
        terms = [metric_value(sort.name or "", sort.aggregate)]
    else:
        terms = [{"start": Run.start_time, "run": Run.id, "experiment": Experiment.name, "status": Run.status,
                  "host": Run.host, "ranks": Run.world_size, "heartbeat": Run.last_heartbeat}[sort.column]]
    ordered = [(term.desc() if sort.descending else term.asc()).nulls_last() for term in terms]
    return [*ordered, Run.start_time.desc(), Run.key.desc()]


def page_keys(session: Session, query: RunsQuery, project_id: int | None) -> tuple[list[int], int]:
    """The run keys of the query's page, in order, and how many runs match in all."""
    dialect = session.get_bind().dialect.name
    total = session.scalar(_filtered(dialect, query, project_id, [func.count()])) or 0
    keys = session.scalars(_filtered(dialect, query, project_id, [Run.key]).order_by(*_order(dialect, query.sort))
                           .limit(PAGE_SIZE).offset(query.offset))
    return list(keys), int(total)


def page_rows(session: Session, keys: list[int], metrics: Sequence[str], params: Sequence[str]) -> list[RunRow]:
    """The page's rows in the order of `keys`: runs with experiment and project, rank counts, chosen params and
    metrics (last, min and max from the blocks; the last point read by its unique key)."""
    if not keys:
        return []
    runs = {run.key: run for run in session.scalars(
        select(Run).where(Run.key.in_(keys)).options(selectinload(Run.experiment).selectinload(Experiment.project)))}
    endpoints = dict(session.execute(select(RunEndpoint.run_key, func.count()).where(RunEndpoint.run_key.in_(keys))
                                     .group_by(RunEndpoint.run_key)).all())
    rows = {key: RunRow(runs[key], runs[key].world_size or endpoints.get(key) or None) for key in keys if key in runs}
    for row in rows.values():
        for path in params:
            found, value = _lookup(row.run.params or {}, path)
            if found:
                row.params[path] = value
    if metrics:
        _fill_metrics(session, rows, list(metrics))
    return [rows[key] for key in keys if key in rows]


def _lookup(params: dict[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = params
    for part in _param_path(path):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _fill_metrics(session: Session, rows: dict[int, RunRow], metrics: list[str]) -> None:
    keys = list(rows)
    summaries = session.execute(
        select(MetricBlock.run_key, MetricBlock.key, func.min(MetricBlock.min_value), func.max(MetricBlock.max_value),
               func.min(MetricBlock.neg_inf_step), func.min(MetricBlock.pos_inf_step), func.max(MetricBlock.block))
        .where(MetricBlock.run_key.in_(keys), MetricBlock.rank == 0, MetricBlock.key.in_(metrics))
        .group_by(MetricBlock.run_key, MetricBlock.key))
    last_blocks: list[tuple[int, str, int]] = []
    for run_key, key, low, high, neg_inf, pos_inf, block in summaries:
        rows[run_key].metrics[key] = MetricCell(min=-math.inf if neg_inf is not None else low,
                                                max=math.inf if pos_inf is not None else high)
        last_blocks.append((run_key, key, block))
    if not last_blocks:
        return
    last_steps = session.execute(select(MetricBlock.run_key, MetricBlock.key, MetricBlock.last_step).where(or_(*(
        and_(MetricBlock.run_key == run_key, MetricBlock.rank == 0, MetricBlock.key == key, MetricBlock.block == block)
        for run_key, key, block in last_blocks)))).all()
    points = session.execute(select(MetricPoint.run_key, MetricPoint.key, MetricPoint.step, MetricPoint.value,
                                    MetricPoint.special).where(or_(*(
        and_(MetricPoint.run_key == run_key, MetricPoint.rank == 0, MetricPoint.key == key, MetricPoint.step == step)
        for run_key, key, step in last_steps))))
    for run_key, key, step, value, special in points:
        cell = rows[run_key].metrics[key]
        cell.last, cell.last_step = decode_value(value, special), step


def experiment_tree(session: Session, project_id: int | None, limit: int = 200) -> list[tuple[str, list[tuple]]]:
    """Projects with their experiments (id, name, run count, latest start), most recently active first."""
    query = (select(Project.name, Experiment.id, Experiment.name, func.count(Run.key), func.max(Run.start_time))
             .select_from(Experiment).join(Project, Project.id == Experiment.project_id)
             .outerjoin(Run, Run.experiment_id == Experiment.id)
             .group_by(Project.name, Experiment.id, Experiment.name))
    if project_id is not None:
        query = query.where(Experiment.project_id == project_id)
    rows = session.execute(query.order_by(func.max(Run.start_time).desc().nulls_last(), Experiment.id.desc())
                           .limit(limit)).all()
    tree: dict[str, list[tuple]] = {}
    for project, experiment_id, name, count, _latest in rows:
        tree.setdefault(project, []).append((experiment_id, name, int(count)))
    return list(tree.items())
