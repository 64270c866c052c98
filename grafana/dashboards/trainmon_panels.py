"""Building blocks shared by the trainmon dashboards (grafanalib): datasources, variables, panels, layout.

Datasource uids are fixed by grafana/provisioning/datasources/trainmon.yml, so the dashboards work in any Grafana
provisioned from this repository. Every query here is executed by tests/stack/test_dashboards_data.py against a
real Prometheus and Postgres holding a simulated run: a panel without data fails that test.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import attr
from grafanalib.core import (
    Dashboard,
    DashboardLink,
    GridPos,
    Panel,
    RowPanel,
    SqlTarget,
    Stat,
    Table,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)

PROMETHEUS = {"type": "prometheus", "uid": "trainmon-prometheus"}
POSTGRES = {"type": "grafana-postgresql-datasource", "uid": "trainmon-postgres"}

# Label matchers every run-scoped Prometheus query starts with. `cluster` is the external label each cluster's
# Prometheus adds when it is federated or remote-writes to a global one (prometheus/federation/); on a cluster's own
# Prometheus the label does not exist and the variable's "All" (.*) matches its absence.
RUN = 'cluster=~"$cluster", experiment=~"$experiment", run_id=~"$run_id"'
WIDTH = 24


def prom(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> Target:
    """A Prometheus query; `legend` uses Grafana's {{label}} syntax."""
    return Target(expr=expr, legendFormat=legend, refId=ref, instant=instant, datasource=PROMETHEUS)


@attr.s
class CodeSqlTarget(SqlTarget):
    """A raw SQL query against the metadata DB (Postgres datasource, code editor mode)."""

    def to_json_data(self) -> dict:
        data = super().to_json_data()
        data.update({"editorMode": "code", "rawQuery": True, "datasource": POSTGRES})
        return data


def sql(query: str, fmt: str = "table", ref: str = "A") -> CodeSqlTarget:
    return CodeSqlTarget(rawSql=query, format=fmt, refId=ref)


def query_variable(name: str, query: str, label: str, multi: bool = False, include_all: bool = False) -> Template:
    """A variable whose values come from Prometheus `label_values(...)`."""
    return Template(name=name, label=label, query=query, dataSource=PROMETHEUS, multi=multi, includeAll=include_all,
                    allValue=".*" if include_all else None, refresh=2, sort=1, default="")


def cluster_variable() -> Template:
    """`$cluster`: the clusters whose runs a global Prometheus holds (All: every one, or none on a cluster's own)."""
    return query_variable("cluster", "label_values(trainmon_run_info, cluster)", "Cluster", multi=True,
                          include_all=True)


def experiment_variable(multi: bool = False) -> Template:
    return query_variable("experiment", 'label_values(trainmon_run_info{cluster=~"$cluster"}, experiment)',
                          "Experiment", multi=multi, include_all=multi)


def run_variable(multi: bool = True) -> Template:
    return query_variable("run_id",
                          'label_values(trainmon_run_info{cluster=~"$cluster", experiment=~"$experiment"}, run_id)',
                          "Run", multi=multi, include_all=False)


def run_label_variable(name: str, metric: str, label: str, title: str, multi: bool = False,
                       include_all: bool = False) -> Template:
    """A variable over the values of `label` on `metric` within the selected experiments and runs."""
    return query_variable(name, f"label_values({metric}{{{RUN}}}, {label})", title, multi=multi,
                          include_all=include_all)


def key_variable(multi: bool = False) -> Template:
    """`$key`: the metric keys the selected runs logged (with "All" when `multi`)."""
    return run_label_variable("key", "trainmon_metric_value", "key", "Metric", multi=multi, include_all=multi)


def timeseries(title: str, *targets: Target, unit: str = "", description: str = "", width: int = 12,
               height: int = 8, **extra: object) -> TimeSeries:
    return TimeSeries(title=title, targets=list(targets), unit=unit, description=description,
                      dataSource=POSTGRES if isinstance(targets[0], SqlTarget) else PROMETHEUS,
                      gridPos=GridPos(h=height, w=width, x=0, y=0), **extra)


def stat(title: str, target: Target, unit: str = "", description: str = "", width: int = 4,
         decimals: int | None = None) -> Stat:
    source = POSTGRES if isinstance(target, SqlTarget) else PROMETHEUS
    return Stat(title=title, targets=[target], format=unit, description=description, dataSource=source,
                reduceCalc="lastNotNull", decimals=decimals, gridPos=GridPos(h=4, w=width, x=0, y=0))


def run_stat(title: str, expr: str, **options: object) -> Stat:
    """A stat of an instant query with one value per run, labelled by run_id; `options` as for `stat`."""
    return stat(title, prom(expr, "{{run_id}}", instant=True), **options)


def table(title: str, target: Target, description: str = "", width: int = 12, height: int = 8,
          transformations: Sequence[dict] = ()) -> Table:
    source = POSTGRES if isinstance(target, SqlTarget) else PROMETHEUS
    return Table(title=title, targets=[target], description=description, dataSource=source,
                 transformations=list(transformations), gridPos=GridPos(h=height, w=width, x=0, y=0))


@attr.s
class Trend(Panel):
    """Grafana's Trend panel (10+): lines over a numeric x field (the training step), not over time."""

    x_field: str = attr.ib(default="step")
    unit: str = attr.ib(default="")

    def to_json_data(self) -> dict:
        return self.panel_json({
            "type": "trend",
            "fieldConfig": {"defaults": {"unit": self.unit, "custom": {"drawStyle": "line", "showPoints": "never",
                                                                        "spanNulls": True}}, "overrides": []},
            "options": {"xField": self.x_field, "legend": {"showLegend": True, "displayMode": "list",
                                                            "placement": "bottom"},
                        "tooltip": {"mode": "multi"}},
        })


def row(title: str) -> RowPanel:
    return RowPanel(title=title, gridPos=GridPos(h=1, w=WIDTH, x=0, y=0))


def layout(panels: Iterable[Panel]) -> list[Panel]:
    """Place panels left to right in rows of 24 columns; a RowPanel starts a new line."""
    placed: list[Panel] = []
    x = y = line_height = 0
    for panel in panels:
        pos = panel.gridPos
        if isinstance(panel, RowPanel) or x + pos.w > WIDTH:
            y += line_height
            x = line_height = 0
        panel.gridPos = GridPos(h=pos.h, w=pos.w, x=x, y=y)
        x += pos.w
        line_height = max(line_height, pos.h)
        if isinstance(panel, RowPanel):
            y += pos.h
            x = line_height = 0
        placed.append(panel)
    return placed


def dashboard(uid: str, title: str, description: str, variables: Sequence[Template],
              panels: Iterable[Panel], time_from: str = "now-6h") -> Dashboard:
    """A dashboard with a stable uid, 30 s refresh and the trainmon tag; panel ids assigned in order. The
    `cluster` variable comes first on every dashboard."""
    # A "trainmon" dropdown on every dashboard that opens the others with the same runs and time range.
    links = [DashboardLink(title="trainmon", type="dashboards", tags=["trainmon"], asDropdown=True,
                           includeVars=True, keepTime=True)]
    variables = [cluster_variable(), *variables]
    return Dashboard(uid=uid, title=title, description=description, tags=["trainmon"], refresh="30s", links=links,
                     timezone="browser", time=Time(time_from, "now"), templating=Templating(list=variables),
                     panels=layout(panels), sharedCrosshair=True, schemaVersion=39).auto_panel_ids()
