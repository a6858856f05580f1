"""Initial schema: the normalized history, the append-only event log and the public views.

Revision ID: a45c222e41ef
Revises:
Create Date: 2026-12-04

The COMMENT ON text below is the reference for every table, view and column;
docs/schema.md is generated from it (`python -m collector.db.schema_doc`).
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from collector.db.comments import apply_comments

revision: str = "a45c222e41ef"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

S = "iscsi_audit"


def upgrade() -> None:
    _create_tables()
    _create_append_only_guard()
    _create_views()
    apply_comments(op.get_bind())


def downgrade() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {S}.{view}")
    op.execute(f"DROP FUNCTION IF EXISTS {S}.svm_name_at, {S}.interface_at CASCADE")
    _drop_tables()
    op.execute(f"DROP FUNCTION IF EXISTS {S}.refuse_change CASCADE")


def _create_tables() -> None:
    op.create_table(
        "clusters",
        sa.Column("cluster_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("uuid", sa.UUID(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("label", sa.Text(), nullable=False),
        sa.Column("version", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("state_version", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.PrimaryKeyConstraint("cluster_id", name=op.f("pk_clusters")),
        sa.UniqueConstraint("uuid", name=op.f("uq_clusters_uuid")),
        schema="iscsi_audit",
    )
    op.create_table(
        "igroups",
        sa.Column("igroup_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("uuid", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_igroups_cluster_id_clusters"),
        ),
        sa.PrimaryKeyConstraint("igroup_id", name=op.f("pk_igroups")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_igroups_cluster_id_uuid"),
        "igroups",
        ["cluster_id", "uuid"],
        unique=True,
        schema="iscsi_audit",
    )
    op.create_table(
        "interfaces",
        sa.Column("interface_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("uuid", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_interfaces_cluster_id_clusters"),
        ),
        sa.PrimaryKeyConstraint("interface_id", name=op.f("pk_interfaces")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_interfaces_cluster_id_uuid"),
        "interfaces",
        ["cluster_id", "uuid"],
        unique=True,
        schema="iscsi_audit",
    )
    op.create_table(
        "polls",
        sa.Column("poll_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=True),
        sa.Column("cluster_label", sa.Text(), nullable=False),
        sa.Column("started_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("finished_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("outcome", sa.Text(), nullable=False),
        sa.Column("page_count", sa.Integer(), nullable=False),
        sa.Column("session_count", sa.Integer(), nullable=True),
        sa.Column("connection_count", sa.Integer(), nullable=True),
        sa.Column("rejected_count", sa.Integer(), nullable=False),
        sa.Column("event_count", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("collector", sa.Text(), nullable=False),
        sa.CheckConstraint("outcome IN ('ok', 'partial', 'failed')", name=op.f("ck_polls_outcome")),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_polls_cluster_id_clusters"),
        ),
        sa.PrimaryKeyConstraint("poll_id", name=op.f("pk_polls")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_polls_cluster_id_started_at"),
        "polls",
        ["cluster_id", "started_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_polls_cluster_label_started_at"),
        "polls",
        ["cluster_label", "started_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        "ix_polls_ok",
        "polls",
        ["cluster_id", "started_at"],
        unique=False,
        schema="iscsi_audit",
        postgresql_where=sa.text("outcome = 'ok'"),
    )
    op.create_table(
        "svms",
        sa.Column("svm_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("uuid", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_svms_cluster_id_clusters"),
        ),
        sa.PrimaryKeyConstraint("svm_id", name=op.f("pk_svms")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_svms_cluster_id_uuid"),
        "svms",
        ["cluster_id", "uuid"],
        unique=True,
        schema="iscsi_audit",
    )
    op.create_table(
        "igroup_names",
        sa.Column("igroup_id", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("valid_to", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["igroup_id"],
            ["iscsi_audit.igroups.igroup_id"],
            name=op.f("fk_igroup_names_igroup_id_igroups"),
        ),
        sa.PrimaryKeyConstraint("igroup_id", "valid_from", name=op.f("pk_igroup_names")),
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_igroup_names_current",
        "igroup_names",
        ["igroup_id"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.create_table(
        "interface_versions",
        sa.Column("interface_id", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("valid_to", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("address", postgresql.INET(), nullable=True),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["iscsi_audit.interfaces.interface_id"],
            name=op.f("fk_interface_versions_interface_id_interfaces"),
        ),
        sa.PrimaryKeyConstraint("interface_id", "valid_from", name=op.f("pk_interface_versions")),
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_interface_versions_current",
        "interface_versions",
        ["interface_id"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.create_table(
        "rejected_records",
        sa.Column("rejected_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("poll_id", sa.BigInteger(), nullable=False),
        sa.Column("page", sa.Integer(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("raw", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.ForeignKeyConstraint(
            ["poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_rejected_records_poll_id_polls"),
        ),
        sa.PrimaryKeyConstraint("rejected_id", name=op.f("pk_rejected_records")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_rejected_records_poll_id"),
        "rejected_records",
        ["poll_id"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_table(
        "sessions",
        sa.Column("session_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("svm_id", sa.BigInteger(), nullable=False),
        sa.Column("target_portal_group", sa.Text(), nullable=False),
        sa.Column("tsih", sa.Integer(), nullable=False),
        sa.Column("isid", sa.Text(), nullable=False),
        sa.Column("initiator_name", sa.Text(), nullable=False),
        sa.Column("target_portal_group_tag", sa.Integer(), nullable=True),
        sa.Column("initiator_alias", sa.Text(), nullable=True),
        sa.Column("initiator_comment", sa.Text(), nullable=True),
        sa.Column("first_seen_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("ended_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("opened_by_poll_id", sa.BigInteger(), nullable=False),
        sa.Column("closed_by_poll_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["closed_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_sessions_closed_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_sessions_cluster_id_clusters"),
        ),
        sa.ForeignKeyConstraint(
            ["opened_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_sessions_opened_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["svm_id"], ["iscsi_audit.svms.svm_id"], name=op.f("fk_sessions_svm_id_svms")
        ),
        sa.PrimaryKeyConstraint("session_id", name=op.f("pk_sessions")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_sessions_cluster_id_first_seen_at"),
        "sessions",
        ["cluster_id", "first_seen_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        "ix_sessions_during",
        "sessions",
        [sa.literal_column("tstzrange(first_seen_at, ended_at, '[]')")],
        unique=False,
        schema="iscsi_audit",
        postgresql_using="gist",
    )
    op.create_index(
        op.f("ix_sessions_initiator_name_first_seen_at"),
        "sessions",
        ["initiator_name", "first_seen_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_sessions_open",
        "sessions",
        ["cluster_id", "svm_id", "target_portal_group", "tsih", "isid", "initiator_name"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "svm_names",
        sa.Column("svm_id", sa.BigInteger(), nullable=False),
        sa.Column("valid_from", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("valid_to", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["svm_id"], ["iscsi_audit.svms.svm_id"], name=op.f("fk_svm_names_svm_id_svms")
        ),
        sa.PrimaryKeyConstraint("svm_id", "valid_from", name=op.f("pk_svm_names")),
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_svm_names_current",
        "svm_names",
        ["svm_id"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.create_table(
        "connections",
        sa.Column("connection_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("cid", sa.Integer(), nullable=False),
        sa.Column("authentication_type", sa.Text(), nullable=True),
        sa.Column("initiator_address", postgresql.INET(), nullable=True),
        sa.Column("initiator_port", sa.Integer(), nullable=True),
        sa.Column("interface_id", sa.BigInteger(), nullable=True),
        sa.Column("first_seen_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("ended_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("opened_by_poll_id", sa.BigInteger(), nullable=False),
        sa.Column("closed_by_poll_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["closed_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_connections_closed_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["iscsi_audit.interfaces.interface_id"],
            name=op.f("fk_connections_interface_id_interfaces"),
        ),
        sa.ForeignKeyConstraint(
            ["opened_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_connections_opened_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["iscsi_audit.sessions.session_id"],
            name=op.f("fk_connections_session_id_sessions"),
        ),
        sa.PrimaryKeyConstraint("connection_id", name=op.f("pk_connections")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_connections_initiator_address"),
        "connections",
        ["initiator_address"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_connections_session_id"),
        "connections",
        ["session_id"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_connections_open",
        "connections",
        ["session_id", "cid"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.create_table(
        "events",
        sa.Column("event_id", sa.BigInteger(), sa.Identity(always=True), nullable=False),
        sa.Column("cluster_id", sa.BigInteger(), nullable=False),
        sa.Column("poll_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("observed_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("occurred_after", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("session_id", sa.BigInteger(), nullable=True),
        sa.Column("details", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(), nullable=False),
        sa.Column("hash", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["iscsi_audit.clusters.cluster_id"],
            name=op.f("fk_events_cluster_id_clusters"),
        ),
        sa.ForeignKeyConstraint(
            ["poll_id"], ["iscsi_audit.polls.poll_id"], name=op.f("fk_events_poll_id_polls")
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["iscsi_audit.sessions.session_id"],
            name=op.f("fk_events_session_id_sessions"),
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_events")),
        sa.UniqueConstraint("hash", name=op.f("uq_events_hash")),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_events_cluster_id_observed_at"),
        "events",
        ["cluster_id", "observed_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_events_kind_observed_at"),
        "events",
        ["kind", "observed_at"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_events_session_id"), "events", ["session_id"], unique=False, schema="iscsi_audit"
    )
    op.create_index(
        "uq_events_chain", "events", ["cluster_id", "prev_hash"], unique=True, schema="iscsi_audit"
    )
    op.create_table(
        "session_igroups",
        sa.Column("session_id", sa.BigInteger(), nullable=False),
        sa.Column("igroup_id", sa.BigInteger(), nullable=False),
        sa.Column("joined_at", sa.TIMESTAMP(timezone=True), nullable=False),
        sa.Column("left_at", sa.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("joined_by_poll_id", sa.BigInteger(), nullable=False),
        sa.Column("left_by_poll_id", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["igroup_id"],
            ["iscsi_audit.igroups.igroup_id"],
            name=op.f("fk_session_igroups_igroup_id_igroups"),
        ),
        sa.ForeignKeyConstraint(
            ["joined_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_session_igroups_joined_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["left_by_poll_id"],
            ["iscsi_audit.polls.poll_id"],
            name=op.f("fk_session_igroups_left_by_poll_id_polls"),
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["iscsi_audit.sessions.session_id"],
            name=op.f("fk_session_igroups_session_id_sessions"),
        ),
        sa.PrimaryKeyConstraint(
            "session_id", "igroup_id", "joined_at", name=op.f("pk_session_igroups")
        ),
        schema="iscsi_audit",
    )
    op.create_index(
        op.f("ix_session_igroups_igroup_id"),
        "session_igroups",
        ["igroup_id"],
        unique=False,
        schema="iscsi_audit",
    )
    op.create_index(
        "uq_session_igroups_open",
        "session_igroups",
        ["session_id", "igroup_id"],
        unique=True,
        schema="iscsi_audit",
        postgresql_where=sa.text("left_at IS NULL"),
    )


def _drop_tables() -> None:
    op.drop_index(
        "uq_session_igroups_open",
        table_name="session_igroups",
        schema="iscsi_audit",
        postgresql_where=sa.text("left_at IS NULL"),
    )
    op.drop_index(
        op.f("ix_session_igroups_igroup_id"), table_name="session_igroups", schema="iscsi_audit"
    )
    op.drop_table("session_igroups", schema="iscsi_audit")
    op.drop_index("uq_events_chain", table_name="events", schema="iscsi_audit")
    op.drop_index(op.f("ix_events_session_id"), table_name="events", schema="iscsi_audit")
    op.drop_index(op.f("ix_events_kind_observed_at"), table_name="events", schema="iscsi_audit")
    op.drop_index(
        op.f("ix_events_cluster_id_observed_at"), table_name="events", schema="iscsi_audit"
    )
    op.drop_table("events", schema="iscsi_audit")
    op.drop_index(
        "uq_connections_open",
        table_name="connections",
        schema="iscsi_audit",
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.drop_index(op.f("ix_connections_session_id"), table_name="connections", schema="iscsi_audit")
    op.drop_index(
        op.f("ix_connections_initiator_address"), table_name="connections", schema="iscsi_audit"
    )
    op.drop_table("connections", schema="iscsi_audit")
    op.drop_index(
        "uq_svm_names_current",
        table_name="svm_names",
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.drop_table("svm_names", schema="iscsi_audit")
    op.drop_index(
        "uq_sessions_open",
        table_name="sessions",
        schema="iscsi_audit",
        postgresql_where=sa.text("ended_at IS NULL"),
    )
    op.drop_index(
        op.f("ix_sessions_initiator_name_first_seen_at"),
        table_name="sessions",
        schema="iscsi_audit",
    )
    op.drop_index(
        "ix_sessions_during", table_name="sessions", schema="iscsi_audit", postgresql_using="gist"
    )
    op.drop_index(
        op.f("ix_sessions_cluster_id_first_seen_at"), table_name="sessions", schema="iscsi_audit"
    )
    op.drop_table("sessions", schema="iscsi_audit")
    op.drop_index(
        op.f("ix_rejected_records_poll_id"), table_name="rejected_records", schema="iscsi_audit"
    )
    op.drop_table("rejected_records", schema="iscsi_audit")
    op.drop_index(
        "uq_interface_versions_current",
        table_name="interface_versions",
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.drop_table("interface_versions", schema="iscsi_audit")
    op.drop_index(
        "uq_igroup_names_current",
        table_name="igroup_names",
        schema="iscsi_audit",
        postgresql_where=sa.text("valid_to IS NULL"),
    )
    op.drop_table("igroup_names", schema="iscsi_audit")
    op.drop_index(op.f("ix_svms_cluster_id_uuid"), table_name="svms", schema="iscsi_audit")
    op.drop_table("svms", schema="iscsi_audit")
    op.drop_index(
        "ix_polls_ok",
        table_name="polls",
        schema="iscsi_audit",
        postgresql_where=sa.text("outcome = 'ok'"),
    )
    op.drop_index(
        op.f("ix_polls_cluster_label_started_at"), table_name="polls", schema="iscsi_audit"
    )
    op.drop_index(op.f("ix_polls_cluster_id_started_at"), table_name="polls", schema="iscsi_audit")
    op.drop_table("polls", schema="iscsi_audit")
    op.drop_index(
        op.f("ix_interfaces_cluster_id_uuid"), table_name="interfaces", schema="iscsi_audit"
    )
    op.drop_table("interfaces", schema="iscsi_audit")
    op.drop_index(op.f("ix_igroups_cluster_id_uuid"), table_name="igroups", schema="iscsi_audit")
    op.drop_table("igroups", schema="iscsi_audit")
    op.drop_table("clusters", schema="iscsi_audit")


def _create_append_only_guard() -> None:
    # Events are evidence: nobody may edit or remove them. Only the table's owner (the
    # migration role) can lift this, by disabling the trigger, which leaves a trace.
    op.execute(f"""
        CREATE FUNCTION {S}.refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION '%.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$""")
    op.execute(f"""CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON {S}.events
                   FOR EACH ROW EXECUTE FUNCTION {S}.refuse_change()""")
    op.execute(f"""CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON {S}.events
                   FOR EACH STATEMENT EXECUTE FUNCTION {S}.refuse_change()""")


VIEWS = ("session_events", "session_history", "connection_history", "poll_log")


def _create_views() -> None:
    op.execute(f"""
        CREATE FUNCTION {S}.svm_name_at(p_svm_id bigint, p_at timestamptz) RETURNS text
        LANGUAGE sql STABLE AS $$
            SELECT name FROM {S}.svm_names
            WHERE svm_id = p_svm_id AND valid_from <= p_at
            ORDER BY valid_from DESC LIMIT 1 $$""")
    op.execute(f"""
        CREATE FUNCTION {S}.interface_at(p_interface_id bigint, p_at timestamptz)
        RETURNS {S}.interface_versions LANGUAGE sql STABLE AS $$
            SELECT * FROM {S}.interface_versions
            WHERE interface_id = p_interface_id AND valid_from <= p_at
            ORDER BY valid_from DESC LIMIT 1 $$""")
    op.execute(f"""
        CREATE VIEW {S}.session_events AS
        SELECT e.event_id, c.label AS cluster_name, e.kind, e.observed_at, e.occurred_after,
               {S}.svm_name_at(s.svm_id, e.observed_at) AS svm_name,
               s.initiator_name, s.isid, s.tsih, s.target_portal_group,
               e.details, e.session_id, e.poll_id, c.uuid AS cluster_uuid
        FROM {S}.events e
        JOIN {S}.clusters c ON c.cluster_id = e.cluster_id
        LEFT JOIN {S}.sessions s ON s.session_id = e.session_id""")
    op.execute(f"""
        CREATE VIEW {S}.session_history AS
        SELECT s.session_id, c.label AS cluster_name,
               {S}.svm_name_at(s.svm_id, coalesce(s.ended_at, 'infinity')) AS svm_name,
               s.initiator_name, s.initiator_alias, s.isid, s.tsih, s.target_portal_group,
               s.first_seen_at,
               coalesce(s.last_seen_at, greatest(s.first_seen_at, last_ok.started_at))
                   AS last_seen_at,
               s.ended_at, s.target_portal_group_tag, s.initiator_comment,
               s.ended_at IS NULL AS is_open,
               (SELECT count(*) FROM {S}.connections x WHERE x.session_id = s.session_id
                    AND x.ended_at IS NULL) AS open_connections,
               s.opened_by_poll_id, s.closed_by_poll_id, c.uuid AS cluster_uuid
        FROM {S}.sessions s
        JOIN {S}.clusters c ON c.cluster_id = s.cluster_id
        LEFT JOIN LATERAL (
            SELECT p.started_at FROM {S}.polls p
            WHERE p.cluster_id = s.cluster_id AND p.outcome = 'ok'
            ORDER BY p.started_at DESC LIMIT 1) last_ok ON s.ended_at IS NULL""")
    op.execute(f"""
        CREATE VIEW {S}.connection_history AS
        SELECT x.connection_id, x.session_id, h.cluster_name, h.svm_name, h.initiator_name,
               h.isid, h.tsih, h.target_portal_group, x.cid, x.authentication_type,
               x.initiator_address, x.initiator_port,
               (lif).name AS interface_name, (lif).address AS interface_address,
               (lif).port AS interface_port, i.uuid AS interface_uuid,
               x.first_seen_at,
               coalesce(x.last_seen_at, h.last_seen_at) AS last_seen_at,
               x.ended_at
        FROM {S}.connections x
        JOIN {S}.session_history h ON h.session_id = x.session_id
        LEFT JOIN {S}.interfaces i ON i.interface_id = x.interface_id
        LEFT JOIN LATERAL (SELECT {S}.interface_at(x.interface_id, x.first_seen_at) AS lif) v
            ON true""")
    op.execute(f"""
        CREATE VIEW {S}.poll_log AS
        SELECT p.poll_id, p.cluster_label AS cluster_name, p.started_at, p.finished_at,
               p.outcome, p.session_count, p.error,
               p.connection_count, p.rejected_count, p.event_count, p.page_count,
               p.finished_at - p.started_at AS duration, p.collector, c.uuid AS cluster_uuid
        FROM {S}.polls p
        LEFT JOIN {S}.clusters c ON c.cluster_id = p.cluster_id""")
