"""runs.context: the run's context captured by the SDK at start (git state, command, versions, GPUs), a nullable
JSON object; runs registered before this revision have none

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("runs", sa.Column("context", sa.JSON(), nullable=True))


def downgrade() -> None:
    # A plain ALTER TABLE ... DROP COLUMN (SQLite >= 3.35, PostgreSQL): a batch copy of `runs` would cascade
    # deletes into its children on SQLite.
    op.drop_column("runs", "context")
