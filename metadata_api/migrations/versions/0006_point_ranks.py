"""metric_points.rank and metric_blocks.rank: a rank's points are its own series (run, rank, key) instead of keys
suffixed `<key>_rank<N>`; the natural key becomes (run_key, rank, key, step).

Existing points stay rank 0, except keys the SDK wrote for ranks N > 0 before this revision: `<key>_rank<N>`
(N >= 1, no leading zero) becomes key `<key>`, rank N when the same run also has `<key>` (what rank 0 logged), so
a user's own key that merely ends in `_rank3` is left alone. The block summaries are rebuilt from the points.
Point ids are kept (the dashboard's live cursor). Downgrade folds ranks back into suffixed keys.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

import re

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

SUFFIXED = re.compile(r"^(.+)_rank([1-9][0-9]{0,8})$")
POINT_COLUMNS = "id, run_key, key, step, value, special, wall_time"
BLOCK_STEPS = 64  # repositories.series_blocks.BLOCK_STEPS (a migration keeps its own copy of what it relies on)
AGGREGATES = ("MIN(step), MAX(step), COUNT(*), MIN(value), MAX(value), MIN(CASE WHEN special = 1 THEN step END), "
              "MIN(CASE WHEN special = 2 THEN step END), MIN(CASE WHEN special = 3 THEN step END)")
BLOCK_COLUMNS = "first_step, last_step, count, min_value, max_value, nan_step, pos_inf_step, neg_inf_step"


def upgrade() -> None:
    _rebuild_points(with_rank=True)
    _split_rank_keys()
    _rebuild_blocks(with_rank=True)


def downgrade() -> None:
    bind = op.get_bind()
    rows = bind.execute(sa.text("SELECT DISTINCT run_key, rank, key FROM metric_points WHERE rank > 0")).all()
    for run_key, rank, key in rows:
        bind.execute(sa.text("UPDATE metric_points SET key = :suffixed, rank = 0 WHERE run_key = :run "
                             "AND rank = :rank AND key = :key"),
                     {"suffixed": f"{key}_rank{rank}", "run": run_key, "rank": rank, "key": key})
    _rebuild_points(with_rank=False)
    _rebuild_blocks(with_rank=False)


def _split_rank_keys() -> None:
    """`<key>_rank<N>` -> (key, rank N), where the run has `<key>` too."""
    bind = op.get_bind()
    keys: dict[int, set[str]] = {}
    for run_key, key in bind.execute(sa.text("SELECT DISTINCT run_key, key FROM metric_points")):
        keys.setdefault(run_key, set()).add(key)
    for run_key, run_keys in keys.items():
        for key in sorted(run_keys):
            match = SUFFIXED.match(key)
            if match and match.group(1) in run_keys:
                bind.execute(sa.text("UPDATE metric_points SET key = :base, rank = :rank WHERE run_key = :run "
                                     "AND rank = 0 AND key = :key"),
                             {"base": match.group(1), "rank": int(match.group(2)), "run": run_key, "key": key})


def _rebuild_points(with_rank: bool) -> None:
    """metric_points with or without its rank column: a new table, the rows copied (ids kept), the old dropped."""
    bind = op.get_bind()
    postgres = bind.dialect.name == "postgresql"
    op.drop_index("ix_metric_points_wall_time", table_name="metric_points")
    op.rename_table("metric_points", "metric_points_old")
    if postgres:  # free the names of the primary key, unique constraint and id sequence
        for index in bind.execute(sa.text("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                                          "AND tablename = 'metric_points_old'")).scalars().all():
            op.execute(f'ALTER INDEX "{index}" RENAME TO "{index}_old"')
        op.execute("ALTER SEQUENCE IF EXISTS metric_points_id_seq RENAME TO metric_points_id_seq_old")
    serial = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    unique = (sa.UniqueConstraint("run_key", "rank", "key", "step", name="uq_metric_points_run_key_rank_key_step")
              if with_rank else sa.UniqueConstraint("run_key", "key", "step", name="uq_metric_points_run_key_step"))
    op.create_table("metric_points", sa.Column("id", serial, autoincrement=True, nullable=False),
                    sa.Column("run_key", sa.Integer(), nullable=False),
                    *([sa.Column("rank", sa.Integer(), server_default="0", nullable=False)] if with_rank else []),
                    sa.Column("key", sa.String(length=255), nullable=False),
                    sa.Column("step", sa.BigInteger(), nullable=False),
                    sa.Column("value", sa.Float(precision=53), nullable=True),
                    sa.Column("special", sa.SmallInteger(), nullable=False),
                    sa.Column("wall_time", sa.Float(precision=53), nullable=False),
                    sa.ForeignKeyConstraint(["run_key"], ["runs.key"], name="fk_metric_points_run_key_runs",
                                            ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint("id", name="pk_metric_points"), unique)
    op.execute(f"INSERT INTO metric_points ({POINT_COLUMNS}) SELECT {POINT_COLUMNS} FROM metric_points_old")
    op.drop_table("metric_points_old")
    op.create_index("ix_metric_points_wall_time", "metric_points", ["wall_time"])
    if postgres:
        op.execute("SELECT setval(pg_get_serial_sequence('metric_points', 'id'), "
                   "COALESCE((SELECT MAX(id) FROM metric_points), 0) + 1, false)")


def _rebuild_blocks(with_rank: bool) -> None:
    """metric_blocks recreated and recomputed from the points (one GROUP BY a block)."""
    op.drop_table("metric_blocks")
    series = ["run_key", "rank", "key"] if with_rank else ["run_key", "key"]
    op.create_table("metric_blocks", sa.Column("run_key", sa.Integer(), nullable=False),
                    *([sa.Column("rank", sa.Integer(), autoincrement=False, nullable=False)] if with_rank else []),
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
                    sa.ForeignKeyConstraint(["run_key"], ["runs.key"], name="fk_metric_blocks_run_key_runs",
                                            ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint(*series, "block", name="pk_metric_blocks"), sqlite_with_rowid=False)
    columns = ", ".join(series)
    op.execute(f"INSERT INTO metric_blocks ({columns}, block, {BLOCK_COLUMNS}) SELECT {columns}, "
               f"step / {BLOCK_STEPS}, {AGGREGATES} FROM metric_points GROUP BY {columns}, step / {BLOCK_STEPS}")
