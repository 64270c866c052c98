"""Alerts: what Prometheus is firing (or about to fire) for the selected runs."""

from trainmon_panels import dashboard, experiment_variable, prom, run_variable, stat, table, timeseries

ALERTS = 'ALERTS{cluster=~"$cluster", experiment=~"$experiment", run_id=~"$run_id"}'

dashboard = dashboard(
    uid="trainmon-alerts",
    title="Alerts",
    description="Firing and pending trainmon alerts of the selected runs (Prometheus ALERTS series). The runbook "
                "for each alert is in docs/runbook.md.",
    variables=[experiment_variable(multi=True), run_variable(multi=True)],
    panels=[
        stat("Firing", prom(f'count({ALERTS[:-1]}, alertstate="firing"}}) or vector(0)', instant=True),
             decimals=0, width=12),
        stat("Pending", prom(f'count({ALERTS[:-1]}, alertstate="pending"}}) or vector(0)', instant=True),
             decimals=0, width=12),
        table("Alerts now", prom(ALERTS, instant=True),
              transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}},
                               {"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                                "__name__": True}}}],
              width=24, height=8),
        timeseries("Alerts over time", prom(f"count by (cluster, alertname, alertstate, run_id) ({ALERTS})",
                                            "{{alertname}} {{alertstate}} {{run_id}}"), width=24),
    ],
)
