"""metric_blocks.min_wall_time (the oldest wall time among a block's points, indexed) replaces the index on
metric_points.wall_time: retention finds old points through their blocks, and each point insert maintains two
B-trees instead of three (that index was about 30 % of SQLite's cost of an ingested point).

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

BLOCK_STEPS = 64  # repositories.series_blocks.BLOCK_STEPS (a migration keeps its own copy of what it relies on)


def upgrade() -> None:
    op.add_column("metric_blocks", sa.Column("min_wall_time", sa.Float(precision=53), nullable=True))
    op.execute(  # one range read of the unique index a block
        "UPDATE metric_blocks SET min_wall_time = (SELECT MIN(p.wall_time) FROM metric_points p "
        "WHERE p.run_key = metric_blocks.run_key AND p.rank = metric_blocks.rank AND p.key = metric_blocks.key "
        f"AND p.step BETWEEN metric_blocks.block * {BLOCK_STEPS} "
        f"AND metric_blocks.block * {BLOCK_STEPS} + {BLOCK_STEPS - 1})")
    op.create_index("ix_metric_blocks_min_wall_time", "metric_blocks", ["min_wall_time"])
    op.drop_index("ix_metric_points_wall_time", table_name="metric_points")


def downgrade() -> None:
    op.create_index("ix_metric_points_wall_time", "metric_points", ["wall_time"])
    op.drop_index("ix_metric_blocks_min_wall_time", table_name="metric_blocks")
    op.drop_column("metric_blocks", "min_wall_time")  # SQLite >= 3.35 drops a column in place
