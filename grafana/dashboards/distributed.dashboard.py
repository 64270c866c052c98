"""Distributed: per-rank step time and rate, the straggler spread, and GPUs per node."""

from trainmon_panels import (
    RUN,
    dashboard,
    experiment_variable,
    prom,
    run_stat,
    run_variable,
    sql,
    stat,
    table,
    timeseries,
)

dashboard = dashboard(
    uid="trainmon-distributed",
    title="Distributed",
    description="Ranks of the selected runs side by side: who is slow, and which node.",
    variables=[experiment_variable(), run_variable(multi=False)],
    panels=[
        run_stat("Ranks reporting", f"count by (cluster, run_id) (trainmon_run_info{{{RUN}}})", decimals=0, width=6),
        # The registered world size as a number: PromQL cannot turn trainmon_run_info's world_size label into a
        # value (its value is 1), the metadata DB stores it as one.
        stat("World size", sql("SELECT r.world_size AS world_size FROM runs r\n"
                               "WHERE r.id = '$run_id' AND r.world_size IS NOT NULL\n"
                               "ORDER BY r.start_time DESC LIMIT 1"),
             decimals=0, width=6, description="World size the run's ranks registered with the metadata API (metadata "
                                              "DB); Ranks reporting counts those Prometheus sees."),
        run_stat("Step-time spread across ranks", f"run:trainmon_step_duration_seconds:spread_ratio5m{{{RUN}}}",
                 unit="percentunit", width=6,
                 description="(slowest - fastest rank) / median rank, 5-minute means. TrainmonStragglerRank fires "
                             "when a rank is 25% above the median for 10 minutes."),
        run_stat("Median rank step time", f"run:trainmon_step_duration_seconds:median_over_ranks5m{{{RUN}}}",
                 unit="s", width=6),
        timeseries("Step time per rank (1m mean)",
                   prom(f"rank:trainmon_step_duration_seconds:mean1m{{{RUN}}}", "rank {{rank}}"), unit="s"),
        timeseries("Step time relative to the median rank",
                   prom(f"rank:trainmon_step_duration_seconds:mean5m{{{RUN}}}"
                        " / on (cluster, experiment, run_id) group_left "
                        f"run:trainmon_step_duration_seconds:median_over_ranks5m{{{RUN}}}", "rank {{rank}}"),
                   unit="percentunit"),
        timeseries("Steps/s per rank",
                   prom(f"rate(trainmon_steps_total{{{RUN}}}[$__rate_interval])", "rank {{rank}}")),
        timeseries("GPU utilization per node",
                   prom(f"avg by (cluster, host) (trainmon_gpu_utilization_ratio{{{RUN}}}"
                        " * on (cluster, experiment, run_id, rank) "
                        f"group_left (host) trainmon_run_info{{{RUN}}})", "{{host}}"), unit="percentunit"),
        table("Ranks", prom(f"trainmon_run_info{{{RUN}}}", instant=True),
              transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}}], width=24, height=6),
    ],
)
