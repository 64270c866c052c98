"""metric_blocks: per-block summaries of metric series (64 steps a block), backfilled from the points

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_AGGREGATES = ("MIN(step), MAX(step), COUNT(*), MIN(value), MAX(value), "
               "MIN(CASE WHEN special = 1 THEN step END), MIN(CASE WHEN special = 2 THEN step END), "
               "MIN(CASE WHEN special = 3 THEN step END)")


def upgrade() -> None:
    op.create_table(
        "metric_blocks",
        sa.Column("run_id", sa.String(length=128), nullable=False),
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
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_metric_blocks_run_id_runs"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", "key", "block", name=op.f("pk_metric_blocks")),
        sqlite_with_rowid=False,
    )
    # Series stored before this revision: their blocks from their points (special: 1 NaN, 2 +Inf, 3 -Inf).
    op.execute(
        "INSERT INTO metric_blocks (run_id, key, block, first_step, last_step, count, min_value, max_value, "
        f"nan_step, pos_inf_step, neg_inf_step) SELECT run_id, key, step / 64, {_AGGREGATES} FROM metric_points "
        "GROUP BY run_id, key, step / 64"
    )


def downgrade() -> None:
    op.drop_table("metric_blocks")
