"""The history's tables (schema `iscsi_audit`). Alembic owns the schema; these models
describe it for reads and for `alembic check`, which fails CI if the two drift.

Rows grow with change, not with polls: one row per session lifetime, per connection
lifetime, per igroup membership interval, per version of a name; one per poll and event.
An open row has `ended_at` (or `valid_to`, `left_at`) null.
"""

from __future__ import annotations

import uuid as uuid_module
from datetime import datetime
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import INET, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TIMESTAMP

from collector.db.comments import SCHEMA, annotate

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Timestamp = TIMESTAMP(timezone=True)


class Base(DeclarativeBase):
    metadata = MetaData(schema=SCHEMA, naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar = {datetime: Timestamp, dict[str, Any]: JSONB}


def _id() -> Mapped[int]:
    return mapped_column(BigInteger, Identity(always=True), primary_key=True)


def _fk(target: str, *, nullable: bool = False) -> Mapped[Any]:
    return mapped_column(BigInteger, ForeignKey(target), nullable=nullable)


class Cluster(Base):
    __tablename__ = "clusters"

    cluster_id: Mapped[int] = _id()
    uuid: Mapped[uuid_module.UUID] = mapped_column(UUID, unique=True)
    name: Mapped[str] = mapped_column(Text)
    label: Mapped[str] = mapped_column(Text)
    version: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime]
    # bumped by every poll that writes a change; a collector whose memory carries the same
    # number may trust what it remembers of the open sessions (collector/db/memory.py)
    state_version: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))


class Poll(Base):
    __tablename__ = "polls"
    __table_args__ = (
        CheckConstraint("outcome IN ('ok', 'partial', 'failed')", name="outcome"),
        Index(None, "cluster_id", "started_at"),
        Index("ix_polls_ok", "cluster_id", "started_at", postgresql_where=text("outcome = 'ok'")),
        Index(None, "cluster_label", "started_at"),
    )

    poll_id: Mapped[int] = _id()
    cluster_id: Mapped[int | None] = _fk("clusters.cluster_id", nullable=True)
    cluster_label: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    outcome: Mapped[str] = mapped_column(Text)
    page_count: Mapped[int] = mapped_column(Integer)
    session_count: Mapped[int | None] = mapped_column(Integer)
    connection_count: Mapped[int | None] = mapped_column(Integer)
    rejected_count: Mapped[int] = mapped_column(Integer)
    event_count: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    collector: Mapped[str] = mapped_column(Text)


class Svm(Base):
    __tablename__ = "svms"
    __table_args__ = (Index(None, "cluster_id", "uuid", unique=True),)

    svm_id: Mapped[int] = _id()
    cluster_id: Mapped[int] = _fk("clusters.cluster_id")
    uuid: Mapped[uuid_module.UUID] = mapped_column(UUID)


class SvmName(Base):
    __tablename__ = "svm_names"
    __table_args__ = (
        Index(
            "uq_svm_names_current", "svm_id", unique=True, postgresql_where=text("valid_to IS NULL")
        ),
    )

    svm_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("svms.svm_id"), primary_key=True)
    valid_from: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    valid_to: Mapped[datetime | None]
    name: Mapped[str | None] = mapped_column(Text)


class Igroup(Base):
    __tablename__ = "igroups"
    __table_args__ = (Index(None, "cluster_id", "uuid", unique=True),)

    igroup_id: Mapped[int] = _id()
    cluster_id: Mapped[int] = _fk("clusters.cluster_id")
    uuid: Mapped[uuid_module.UUID] = mapped_column(UUID)


class IgroupName(Base):
    __tablename__ = "igroup_names"
    __table_args__ = (
        Index(
            "uq_igroup_names_current",
            "igroup_id",
            unique=True,
            postgresql_where=text("valid_to IS NULL"),
        ),
    )

    igroup_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("igroups.igroup_id"), primary_key=True
    )
    valid_from: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    valid_to: Mapped[datetime | None]
    name: Mapped[str | None] = mapped_column(Text)


class Interface(Base):
    __tablename__ = "interfaces"
    __table_args__ = (Index(None, "cluster_id", "uuid", unique=True),)

    interface_id: Mapped[int] = _id()
    cluster_id: Mapped[int] = _fk("clusters.cluster_id")
    uuid: Mapped[uuid_module.UUID] = mapped_column(UUID)


class InterfaceVersion(Base):
    __tablename__ = "interface_versions"
    __table_args__ = (
        Index(
            "uq_interface_versions_current",
            "interface_id",
            unique=True,
            postgresql_where=text("valid_to IS NULL"),
        ),
    )

    interface_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("interfaces.interface_id"), primary_key=True
    )
    valid_from: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    valid_to: Mapped[datetime | None]
    name: Mapped[str | None] = mapped_column(Text)
    address: Mapped[str | None] = mapped_column(INET)
    port: Mapped[int | None] = mapped_column(Integer)


class Session(Base):
    __tablename__ = "sessions"
    __table_args__ = (
        # one open lifetime per identity; two writers cannot both open it
        Index(
            "uq_sessions_open",
            "cluster_id",
            "svm_id",
            "target_portal_group",
            "tsih",
            "isid",
            "initiator_name",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index(None, "initiator_name", "first_seen_at"),
        Index(None, "cluster_id", "first_seen_at"),
        Index(
            "ix_sessions_during",
            text("tstzrange(first_seen_at, ended_at, '[]')"),
            postgresql_using="gist",
        ),
    )

    session_id: Mapped[int] = _id()
    cluster_id: Mapped[int] = _fk("clusters.cluster_id")
    svm_id: Mapped[int] = _fk("svms.svm_id")
    target_portal_group: Mapped[str] = mapped_column(Text)
    tsih: Mapped[int] = mapped_column(Integer)
    isid: Mapped[str] = mapped_column(Text)
    initiator_name: Mapped[str] = mapped_column(Text)
    target_portal_group_tag: Mapped[int | None] = mapped_column(Integer)
    initiator_alias: Mapped[str | None] = mapped_column(Text)
    initiator_comment: Mapped[str | None] = mapped_column(Text)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    opened_by_poll_id: Mapped[int] = _fk("polls.poll_id")
    closed_by_poll_id: Mapped[int | None] = _fk("polls.poll_id", nullable=True)


class Connection(Base):
    __tablename__ = "connections"
    __table_args__ = (
        Index(
            "uq_connections_open",
            "session_id",
            "cid",
            unique=True,
            postgresql_where=text("ended_at IS NULL"),
        ),
        Index(None, "session_id"),
        Index(None, "initiator_address"),
    )

    connection_id: Mapped[int] = _id()
    session_id: Mapped[int] = _fk("sessions.session_id")
    cid: Mapped[int] = mapped_column(Integer)
    authentication_type: Mapped[str | None] = mapped_column(Text)
    initiator_address: Mapped[str | None] = mapped_column(INET)
    initiator_port: Mapped[int | None] = mapped_column(Integer)
    interface_id: Mapped[int | None] = _fk("interfaces.interface_id", nullable=True)
    first_seen_at: Mapped[datetime]
    last_seen_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    opened_by_poll_id: Mapped[int] = _fk("polls.poll_id")
    closed_by_poll_id: Mapped[int | None] = _fk("polls.poll_id", nullable=True)


class SessionIgroup(Base):
    __tablename__ = "session_igroups"
    __table_args__ = (
        Index(
            "uq_session_igroups_open",
            "session_id",
            "igroup_id",
            unique=True,
            postgresql_where=text("left_at IS NULL"),
        ),
        Index(None, "igroup_id"),
    )

    session_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("sessions.session_id"), primary_key=True
    )
    igroup_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("igroups.igroup_id"), primary_key=True
    )
    joined_at: Mapped[datetime] = mapped_column(Timestamp, primary_key=True)
    left_at: Mapped[datetime | None]
    joined_by_poll_id: Mapped[int] = _fk("polls.poll_id")
    left_by_poll_id: Mapped[int | None] = _fk("polls.poll_id", nullable=True)


class Event(Base):
    __tablename__ = "events"
    __table_args__ = (
        # each event names its predecessor: two writers cannot both extend the chain
        Index("uq_events_chain", "cluster_id", "prev_hash", unique=True),
        Index(None, "cluster_id", "observed_at"),
        Index(None, "session_id"),
        Index(None, "kind", "observed_at"),
    )

    event_id: Mapped[int] = _id()
    cluster_id: Mapped[int] = _fk("clusters.cluster_id")
    poll_id: Mapped[int] = _fk("polls.poll_id")
    kind: Mapped[str] = mapped_column(Text)
    observed_at: Mapped[datetime]
    occurred_after: Mapped[datetime | None]
    session_id: Mapped[int | None] = _fk("sessions.session_id", nullable=True)
    details: Mapped[dict[str, Any]]
    prev_hash: Mapped[bytes] = mapped_column(LargeBinary)
    hash: Mapped[bytes] = mapped_column(LargeBinary, unique=True)


class RejectedRecord(Base):
    __tablename__ = "rejected_records"

    rejected_id: Mapped[int] = _id()
    poll_id: Mapped[int] = _fk("polls.poll_id", nullable=False)
    page: Mapped[int] = mapped_column(Integer)
    reason: Mapped[str] = mapped_column(Text)
    raw: Mapped[Any] = mapped_column(JSONB)

    __table_args__ = (Index(None, "poll_id"),)


class SinkPosition(Base):
    """How far a sink has delivered the event log (see collector.sinks)."""

    __tablename__ = "sink_positions"

    sink_name: Mapped[str] = mapped_column(Text, primary_key=True)
    last_event_id: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(Text)


annotate(Base.metadata)


def _table(model: type[Base]) -> Table:
    return cast(Table, model.__table__)


# Core handles for set-based writes (the ORM classes above are for reads)
clusters_table = _table(Cluster)
polls_table = _table(Poll)
svms_table = _table(Svm)
svm_names_table = _table(SvmName)
igroups_table = _table(Igroup)
igroup_names_table = _table(IgroupName)
interfaces_table = _table(Interface)
interface_versions_table = _table(InterfaceVersion)
sessions_table = _table(Session)
connections_table = _table(Connection)
session_igroups_table = _table(SessionIgroup)
events_table = _table(Event)
rejected_records_table = _table(RejectedRecord)
sink_positions_table = _table(SinkPosition)
