"""run ids per project: runs get an internal integer key (`runs.key`) that every child table references as
`run_key`, and `runs.id` (the client's run id) is unique per project (`runs.project_id`) instead of globally;
BIGINT for the integers clients send (runs.pid, rank, world_size; run_endpoints.rank; checkpoints.epoch);
`checkpoints.path`, the stored file of an uploaded checkpoint

Every table holding a run reference is rebuilt: the old one is set aside (renamed, its index names freed), the
new one created under the final names, the rows copied through the run key, the old one dropped. Existing runs
get keys in start order; ids of notes, log lines, checkpoints and artifacts are kept (metric point ids are
internal and renumbered). Downgrade reverses it, and refuses when a run id exists in several projects.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# Children of runs, in creation order (dropped in reverse), with the columns copied besides the run reference.
CHILDREN = {
    "run_tags": "key, value",
    "run_endpoints": "rank, url, host, updated_at",
    "notes": "id, text, created_at",
    "metric_points": "key, step, value, special, wall_time",
    "metric_blocks": "key, block, first_step, last_step, count, min_value, max_value, nan_step, pos_inf_step, "
                     "neg_inf_step",
    "ingest_batches": "kind, batch_id, accepted, created_at",
    "log_lines": "id, time, level, message",
    "checkpoints": "id, name, step, epoch, uri, size_bytes, sha256, metrics, created_at",
    "artifacts": "id, kind, name, step, path, media_type, size_bytes, sha256, metadata, created_at",
}
KEPT_IDS = ("notes", "log_lines", "checkpoints", "artifacts")  # serial ids copied as they are
RUN_COLUMNS = ("experiment_id, status, start_time, end_time, last_heartbeat, host, pid, command, git_commit, rank, "
               "world_size, exporter_url, params")


def upgrade() -> None:
    _set_aside("_0003")
    _create_tables(new=True)
    op.execute(f"INSERT INTO runs (id, project_id, {RUN_COLUMNS}) SELECT r.id, e.project_id, "
               + ", ".join(f"r.{c.strip()}" for c in RUN_COLUMNS.split(","))
               + " FROM runs_0003 r JOIN experiments e ON e.id = r.experiment_id ORDER BY r.start_time, r.id")
    for table, columns in CHILDREN.items():
        op.execute(f"INSERT INTO {table} (run_key, {columns}) SELECT r.key, {_prefixed(columns)} "
                   f"FROM {table}_0003 o JOIN runs r ON r.id = o.run_id")
    _drop_set_aside("_0003")


def downgrade() -> None:
    shared = op.get_bind().execute(sa.text("SELECT id FROM runs GROUP BY id HAVING COUNT(*) > 1")).scalars().all()
    if shared:
        raise RuntimeError(f"cannot downgrade below 0004: run ids used in several projects: {sorted(shared)[:20]}")
    _set_aside("_0004")
    _create_tables(new=False)
    op.execute(f"INSERT INTO runs (id, {RUN_COLUMNS}) SELECT id, {RUN_COLUMNS} FROM runs_0004")
    for table, columns in CHILDREN.items():
        op.execute(f"INSERT INTO {table} (run_id, {columns}) SELECT r.id, {_prefixed(columns)} "
                   f"FROM {table}_0004 o JOIN runs_0004 r ON r.key = o.run_key")
    _drop_set_aside("_0004")


def _prefixed(columns: str) -> str:
    return ", ".join(f"o.{column.strip()}" for column in columns.split(","))


def _set_aside(suffix: str) -> None:
    """Rename runs and its children to `<name><suffix>`, freeing the names of their indexes, constraints and
    sequences (one namespace per schema on PostgreSQL; indexes on SQLite) for the new tables."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    for table in [*CHILDREN, "runs"]:
        if postgres:
            indexes = bind.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                                           "AND tablename = :t"), {"t": table}).scalars().all()
            for index in indexes:  # a primary key or unique constraint is renamed with its index
                op.execute(f'ALTER INDEX "{index}" RENAME TO "{index}{suffix}"')
            sequences = bind.execute(sa.text(
                "SELECT s.relname FROM pg_class s JOIN pg_depend d ON d.objid = s.oid "
                "WHERE s.relkind = 'S' AND d.refobjid = CAST(:t AS regclass) AND d.deptype = 'a'"),
                {"t": table}).scalars().all()
            for sequence in sequences:
                op.execute(f'ALTER SEQUENCE "{sequence}" RENAME TO "{sequence}{suffix}"')
        else:
            indexes = bind.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :t "
                                           "AND sql IS NOT NULL"), {"t": table}).scalars().all()
            for index in indexes:
                op.drop_index(index, table_name=table)
        op.rename_table(table, f"{table}{suffix}")


def _drop_set_aside(suffix: str) -> None:
    """Drop the set-aside tables (children first); on PostgreSQL move each copied id sequence past its ids."""
    for table in [*reversed(CHILDREN), "runs"]:
        op.drop_table(f"{table}{suffix}")
    if op.get_bind().dialect.name == "postgresql":
        for table in KEPT_IDS:
            op.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                       f"COALESCE((SELECT MAX(id) FROM {table}), 0) + 1, false)")


def _create_tables(new: bool) -> None:
    """runs and its children as of 0004 (`new`) or as of 0003."""
    ref = "run_key" if new else "run_id"
    user_int = sa.BigInteger if new else sa.Integer  # integers a client sends
    run_columns = [sa.Column("key", sa.Integer(), nullable=False), sa.Column("id", sa.String(128), nullable=False),
                   sa.Column("project_id", sa.Integer(), nullable=False)] if new else [
        sa.Column("id", sa.String(128), nullable=False)]
    run_constraints = [
        sa.PrimaryKeyConstraint("key", name="pk_runs"), sa.UniqueConstraint("id", "project_id",
                                                                           name="uq_runs_id_project_id"),
        sa.ForeignKeyConstraint(["project_id"], ["projects.id"], name="fk_runs_project_id_projects",
                                ondelete="CASCADE")] if new else [sa.PrimaryKeyConstraint("id", name="pk_runs")]
    op.create_table(
        "runs", *run_columns,
        sa.Column("experiment_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("start_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_time", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_heartbeat", sa.DateTime(timezone=True), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("pid", user_int(), nullable=True),
        sa.Column("command", sa.Text(), nullable=True),
        sa.Column("git_commit", sa.String(length=64), nullable=True),
        sa.Column("rank", user_int(), nullable=True),
        sa.Column("world_size", user_int(), nullable=True),
        sa.Column("exporter_url", sa.String(length=1024), nullable=True),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["experiment_id"], ["experiments.id"], name="fk_runs_experiment_id_experiments",
                                ondelete="CASCADE"),
        *run_constraints,
    )
    op.create_index("ix_runs_experiment_id", "runs", ["experiment_id"])
    op.create_index("ix_runs_status_last_heartbeat", "runs", ["status", "last_heartbeat"])

    def run_ref(table: str) -> list:
        column = sa.Column(ref, sa.Integer() if new else sa.String(128), nullable=False)
        target = "runs.key" if new else "runs.id"
        return [column, sa.ForeignKeyConstraint([ref], [target], name=f"fk_{table}_{ref}_runs", ondelete="CASCADE")]

    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table("run_tags", *run_ref("run_tags"),
                    sa.Column("key", sa.String(length=255), nullable=False),
                    sa.Column("value", sa.String(length=1024), nullable=False),
                    sa.PrimaryKeyConstraint(ref, "key", name="pk_run_tags"))
    op.create_table("run_endpoints", *run_ref("run_endpoints"),
                    sa.Column("rank", user_int(), autoincrement=False, nullable=False),
                    sa.Column("url", sa.String(length=1024), nullable=False),
                    sa.Column("host", sa.String(length=255), nullable=True),
                    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint(ref, "rank", name="pk_run_endpoints"))
    op.create_table("notes", sa.Column("id", sa.Integer(), nullable=False), *run_ref("notes"),
                    sa.Column("text", sa.Text(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_notes"))
    op.create_index(f"ix_notes_{ref}", "notes", [ref])
    op.create_table("metric_points", sa.Column("id", serial, autoincrement=True, nullable=False),
                    *run_ref("metric_points"),
                    sa.Column("key", sa.String(length=255), nullable=False),
                    sa.Column("step", sa.BigInteger(), nullable=False),
                    sa.Column("value", sa.Float(precision=53), nullable=True),
                    sa.Column("special", sa.SmallInteger(), nullable=False),
                    sa.Column("wall_time", sa.Float(precision=53), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_metric_points"),
                    sa.UniqueConstraint(ref, "key", "step", name="uq_metric_points_run_key_step"))
    op.create_index("ix_metric_points_wall_time", "metric_points", ["wall_time"])
    op.create_table("metric_blocks", *run_ref("metric_blocks"),
                    sa.Column("key", sa.String(length=255), nullable=False),
                    sa.Column("block", sa.BigInteger(), autoincrement=False, nullable=False),
                    sa.Column("first_step", sa.BigInteger(), nullable=False),
                    sa.Column("last_step", sa.BigInteger(), nullable=False),
                    sa.Column("count", sa.Integer(), nullable=False),
                    sa.Column("min_value", sa.Float(precision=53), nullable=True),
                    sa.Column("max_value", sa.Float(precision=53), nullable=True),
                    sa.Column("nan_step", sa.BigInteger(), nullable=True),
                    sa.Column("pos_inf_step", sa.BigInteger(), nullable=True),
                    sa.Column("neg_inf_step", sa.BigInteger(), nullable=True),
                    sa.PrimaryKeyConstraint(ref, "key", "block", name="pk_metric_blocks"), sqlite_with_rowid=False)
    op.create_table("ingest_batches", *run_ref("ingest_batches"),
                    sa.Column("kind", sa.String(length=16), nullable=False),
                    sa.Column("batch_id", sa.String(length=255), nullable=False),
                    sa.Column("accepted", sa.Integer(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint(ref, "kind", "batch_id", name="pk_ingest_batches"))
    op.create_index("ix_ingest_batches_created_at", "ingest_batches", ["created_at"])
    op.create_table("log_lines", sa.Column("id", serial, autoincrement=True, nullable=False), *run_ref("log_lines"),
                    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("level", sa.String(length=16), nullable=False),
                    sa.Column("message", sa.Text(), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_log_lines"))
    op.create_index(f"ix_log_lines_{ref}_time", "log_lines", [ref, "time"])
    op.create_table("checkpoints", sa.Column("id", sa.Integer(), nullable=False), *run_ref("checkpoints"),
                    sa.Column("name", sa.String(length=255), nullable=False),
                    sa.Column("step", sa.BigInteger(), nullable=True),
                    sa.Column("epoch", user_int(), nullable=True),
                    sa.Column("uri", sa.String(length=2048), nullable=False),
                    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
                    sa.Column("sha256", sa.String(length=64), nullable=False),
                    sa.Column("metrics", sa.JSON(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    *([sa.Column("path", sa.String(length=2048), nullable=True)] if new else []),
                    sa.PrimaryKeyConstraint("id", name="pk_checkpoints"),
                    sa.UniqueConstraint(ref, "name", name=f"uq_checkpoints_{ref}_name"))
    if not new:
        op.create_index("ix_checkpoints_run_id", "checkpoints", ["run_id"])
    op.create_table("artifacts", sa.Column("id", sa.Integer(), nullable=False), *run_ref("artifacts"),
                    sa.Column("kind", sa.String(length=16), nullable=False),
                    sa.Column("name", sa.String(length=255), nullable=False),
                    sa.Column("step", sa.BigInteger(), nullable=True),
                    sa.Column("path", sa.String(length=2048), nullable=False),
                    sa.Column("media_type", sa.String(length=255), nullable=True),
                    sa.Column("size_bytes", sa.BigInteger(), nullable=False),
                    sa.Column("sha256", sa.String(length=64), nullable=False),
                    sa.Column("metadata", sa.JSON(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint("id", name="pk_artifacts"))
    op.create_index(f"ix_artifacts_{ref}_kind", "artifacts", [ref, "kind"])
