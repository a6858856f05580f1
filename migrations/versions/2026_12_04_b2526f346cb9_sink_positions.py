"""Sink positions: how far each configured sink has delivered the event log.

Revision ID: b2526f346cb9
Revises: a45c222e41ef
Create Date: 2026-12-04

The events table is the sinks' outbox; this table is their only state. A sink that
restarts resumes after `last_event_id`.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from collector.db.comments import apply_comments

revision: str = "b2526f346cb9"
down_revision: str | None = "a45c222e41ef"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "sink_positions",
        sa.Column("sink_name", sa.Text(), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("sink_name", name=op.f("pk_sink_positions")),
        schema="iscsi_audit",
    )
    apply_comments(op.get_bind())


def downgrade() -> None:
    op.drop_table("sink_positions", schema="iscsi_audit")
