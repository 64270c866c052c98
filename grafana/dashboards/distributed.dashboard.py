"""Distributed: per-rank step and compute time, the straggler spread, and GPUs per node."""

from trainmon_panels import (
    RUN,
    dashboard,
    experiment_variable,
    prom,
    run_stat,
    run_variable,
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
        run_stat("World size", f"max by (cluster, run_id) (trainmon_world_size{{{RUN}}})", decimals=0, width=6,
                 description="The launcher's WORLD_SIZE as the ranks report it; Ranks reporting counts those "
                             "Prometheus sees."),
        run_stat("Step-time spread across ranks", f"run:trainmon_step_duration_seconds:spread_ratio5m{{{RUN}}}",
                 unit="percentunit", width=6,
                 description="(slowest - fastest rank) / median rank, 5-minute means. Under synchronous training "
                             "step times even out: TrainmonStragglerRank compares compute time per step."),
        run_stat("Median rank step time", f"run:trainmon_step_duration_seconds:median_over_ranks5m{{{RUN}}}",
                 unit="s", width=6),
        timeseries("Step time per rank (1m mean)",
                   prom(f"rank:trainmon_step_duration_seconds:mean1m{{{RUN}}}", "rank {{rank}}"), unit="s"),
        timeseries("Step time relative to the median rank",
                   prom(f"rank:trainmon_step_duration_seconds:mean5m{{{RUN}}}"
                        " / on (cluster, experiment, run_id) group_left "
                        f"run:trainmon_step_duration_seconds:median_over_ranks5m{{{RUN}}}", "rank {{rank}}"),
                   unit="percentunit"),
        timeseries("Compute time per step, per rank",
                   prom(f"rank:trainmon_compute_seconds_per_step:rate2m{{{RUN}}}", "rank {{rank}}"), unit="s",
                   description="Seconds in compute phases (monitor.phase) per step: under synchronous data "
                               "parallelism the slow rank shows here, not in its step time."),
        timeseries("Compute time relative to the median rank",
                   prom(f"rank:trainmon_compute_seconds_per_step:rate2m{{{RUN}}}"
                        " / on (cluster, experiment, run_id) group_left "
                        f"run:trainmon_compute_seconds_per_step:median_over_ranks2m{{{RUN}}}", "rank {{rank}}"),
                   unit="percentunit",
                   description="TrainmonStragglerRank fires above trainmon:straggler_threshold:ratio (1.1)."),
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
