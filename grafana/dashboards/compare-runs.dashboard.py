"""Compare runs: overlay several runs by wall-clock time (Prometheus) and by training step (metadata DB)."""

from grafanalib.core import GridPos
from trainmon_panels import (
    POSTGRES,
    RUN,
    Trend,
    dashboard,
    experiment_variable,
    key_variable,
    prom,
    row,
    run_label_variable,
    run_variable,
    sql,
    table,
    timeseries,
)

# Long format (step, value, series) split into one series per run and rank for the Trend panel. Rows reference
# runs by their internal key (runs.key); runs.id is the run id the exporter labels carry; each rank's history of a
# key is its own series (metric_points.rank).
BY_STEP_SQL = (
    "SELECT m.step AS step, m.value AS value, r.id || ' rank ' || m.rank AS series\n"
    "FROM metric_points m JOIN runs r ON r.key = m.run_key\n"
    "WHERE r.id IN ($run_id) AND m.rank IN ($rank) AND m.key = '$key' AND m.value IS NOT NULL\n"
    "ORDER BY m.step")

dashboard = dashboard(
    uid="trainmon-compare",
    title="Compare runs",
    description="Pick several runs: the same metric overlaid by time (Prometheus) and by step (metadata DB), "
                "plus their parameters side by side.",
    variables=[experiment_variable(multi=True), run_variable(multi=True), key_variable(),
               run_label_variable("rank", "trainmon_metric_value", "rank", "Rank", multi=True)],
    panels=[
        row("By step (metadata DB)"),
        Trend(title="$key by step", dataSource=POSTGRES, targets=[sql(BY_STEP_SQL)],
              description="Prometheus cannot align runs by step; the metadata DB stores every (step, value).",
              transformations=[{"id": "partitionByValues", "options": {"fields": ["series"], "keepFields": False}}],
              gridPos=GridPos(h=10, w=24, x=0, y=0)),
        table("$key per run", sql(
            "SELECT r.id AS run_id, m.rank AS rank, count(*) AS points, max(m.step) AS last_step,\n"
            "  min(m.value) AS min_value, max(m.value) AS max_value,\n"
            "  (array_agg(m.value ORDER BY m.step DESC))[1] AS last_value\n"
            "FROM metric_points m JOIN runs r ON r.key = m.run_key\n"
            "WHERE r.id IN ($run_id) AND m.rank IN ($rank) AND m.key = '$key' AND m.value IS NOT NULL\n"
            "GROUP BY r.key, r.id, m.rank ORDER BY r.id, m.rank")),
        table("Parameters", sql(
            "SELECT r.id AS run_id, e.name AS experiment, r.status, r.params::text AS params\n"
            "FROM runs r JOIN experiments e ON e.id = r.experiment_id\n"
            "WHERE r.id IN ($run_id) ORDER BY r.start_time")),
        row("By time (Prometheus)"),
        timeseries("$key (last value)", prom(f'trainmon_metric_value{{{RUN}, key="$key", rank=~"$rank"}}',
                                             "{{run_id}} r{{rank}}")),
        timeseries("$key (exact 5m average)", prom(f'run_key:trainmon_metric:avg5m{{{RUN}, key="$key"}}',
                                                   "{{run_id}}")),
        timeseries("Step rate", prom(f"run:trainmon_steps:rate1m{{{RUN}}}", "{{run_id}}")),
        timeseries("GPU SM activity (run average)",
                   prom(f"run:trainmon_gpu_sm_active_ratio:avg{{{RUN}}}", "{{run_id}}"), unit="percentunit"),
    ],
)
