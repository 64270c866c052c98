"""Training overview: one run (or a few) at a glance: loss and any logged metric, speed, status, checkpoints."""

from trainmon_panels import (
    RUN,
    dashboard,
    experiment_variable,
    key_variable,
    prom,
    row,
    run_stat,
    run_variable,
    sql,
    table,
    timeseries,
)

dashboard = dashboard(
    uid="trainmon-overview",
    title="Training overview",
    description="Loss and logged metrics, step rate, throughput, status and checkpoints of the selected runs.",
    variables=[experiment_variable(), run_variable(), key_variable(multi=True)],
    panels=[
        run_stat("Current step", f"max by (cluster, run_id) (trainmon_step{{{RUN}}})", decimals=0),
        run_stat("Epoch", f"max by (cluster, run_id) (trainmon_epoch{{{RUN}}})", decimals=0),
        run_stat("Steps/s", f"run:trainmon_steps:rate1m{{{RUN}}}", decimals=2),
        run_stat("Time since last step",
                 f"time() - max by (cluster, run_id) (trainmon_last_log_timestamp_seconds{{{RUN}}})",
                 unit="s",
                 description="Seconds since the last log_metrics call; TrainmonTrainingStalled fires after 10 "
                             "minutes."),
        run_stat("Checkpoints", f"sum by (cluster, run_id) (trainmon_checkpoints_total{{{RUN}}})", decimals=0),
        run_stat("Since last checkpoint",
                 f"time() - max by (cluster, run_id) (trainmon_last_checkpoint_timestamp_seconds{{{RUN}}})", unit="s"),
        table("Run status (metadata DB)", sql(
            "SELECT r.id AS run_id, e.name AS experiment, r.status, r.start_time, r.end_time, r.host,"
            " r.world_size, r.git_commit\n"
            "FROM runs r JOIN experiments e ON e.id = r.experiment_id\n"
            "WHERE r.id IN ($run_id)\nORDER BY r.start_time DESC"),
            description="Lifecycle status from the metadata API: RUNNING, COMPLETED, FAILED or CRASHED.",
            width=24, height=5),
        row("Loss and metrics"),
        timeseries("Loss (last value per scrape)",
                   prom(f'trainmon_metric_value{{{RUN}, key=~".*loss.*"}}', "{{run_id}} r{{rank}} {{key}}")),
        timeseries("Loss (exact 5m average, all ranks)",
                   prom(f'run_key:trainmon_metric:avg5m{{{RUN}, key=~".*loss.*"}}', "{{run_id}} {{key}}"),
                   description="rate(trainmon_metric_sum)/rate(trainmon_metric_count): every logged value counts, "
                               "not only the ones a scrape happened to see."),
        timeseries("Logged metrics ($key)",
                   prom(f'trainmon_metric_value{{{RUN}, key=~"$key"}}', "{{run_id}} r{{rank}} {{key}}")),
        timeseries("Window extremes ($key)",
                   prom(f'trainmon_metric_window_max{{{RUN}, key=~"$key"}}', "max {{run_id}} {{key}}"),
                   prom(f'trainmon_metric_window_min{{{RUN}, key=~"$key"}}', "min {{run_id}} {{key}}", ref="B"),
                   description="Max/min over the exporter's trailing window: spikes between scrapes show here."),
        timeseries("Non-finite values logged",
                   prom("sum by (cluster, run_id, key, kind) "
                        f"(increase(trainmon_metric_nonfinite_total{{{RUN}}}[$__rate_interval]))",
                        "{{run_id}} {{key}} {{kind}}")),
        row("Speed"),
        timeseries("Step rate", prom(f"run:trainmon_steps:rate1m{{{RUN}}}", "{{run_id}}"), unit="short"),
        timeseries("Throughput",
                   prom(f"run:trainmon_samples:rate1m{{{RUN}}}", "{{run_id}} samples/s"),
                   prom(f"run:trainmon_tokens:rate1m{{{RUN}}}", "{{run_id}} tokens/s", ref="B"), unit="short"),
        timeseries("Step time (mean per rank)",
                   prom(f"rank:trainmon_step_duration_seconds:mean1m{{{RUN}}}", "{{run_id}} r{{rank}}"), unit="s"),
        table("Checkpoints (metadata DB)", sql(
            "SELECT r.id AS run_id, c.name, c.step, c.epoch, c.size_bytes, c.uri, c.created_at\n"
            "FROM checkpoints c JOIN runs r ON r.key = c.run_key WHERE r.id IN ($run_id)\n"
            "ORDER BY c.created_at DESC LIMIT 50")),
    ],
)
