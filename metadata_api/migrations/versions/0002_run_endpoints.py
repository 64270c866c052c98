"""run_endpoints: one exporter endpoint per (run, rank), for per-rank service discovery; an index on
ingest_batches.created_at, for retention

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_endpoints",
        sa.Column("run_id", sa.String(length=128), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("url", sa.String(length=1024), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_endpoints_run_id_runs"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("run_id", "rank", name=op.f("pk_run_endpoints")),
    )
    # Runs registered before this revision keep discovery: their one exporter_url becomes an endpoint.
    op.execute(
        "INSERT INTO run_endpoints (run_id, rank, url, host, updated_at) "
        "SELECT id, COALESCE(rank, 0), exporter_url, host, last_heartbeat FROM runs WHERE exporter_url IS NOT NULL"
    )
    with op.batch_alter_table("ingest_batches", schema=None) as batch_op:
        batch_op.create_index("ix_ingest_batches_created_at", ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ingest_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_ingest_batches_created_at")
    op.drop_table("run_endpoints")
