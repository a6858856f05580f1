"""What every table, view and column of the schema means: the one source for the database's
COMMENT ON text (set by the migrations), the models (so `alembic check` sees no drift)
and docs/schema.md (generated from the database by `python -m collector.db.schema_doc`).
"""

from __future__ import annotations

from sqlalchemy import Connection, MetaData, text

SCHEMA = "iscsi_audit"

_EVENT_KINDS = (
    "connect, disconnect, connection_added, connection_removed, connection_changed,"
    " igroup_joined, igroup_left, session_changed, svm_renamed, igroup_renamed,"
    " interface_changed"
)
_OBSERVED = "When the poll that saw the change started."
_AFTER = (
    "The change happened after this instant: the start of the last ok poll that saw"
    " the previous state. Null when no ok poll came before."
)
_CLUSTER_NAME = "The cluster's label in the collector's configuration."
_CLUSTER_UUID = "The cluster's ONTAP uuid, its identity."
_SVM_NAME = "The SVM's name at that time."
_INITIATOR = "The initiator's iSCSI name (iqn./eui./naa.)."
_ISID = "Initiator session identifier, chosen by the initiator (for example 40:00:01:37:00:00)."
_TSIH = "Target session identifying handle, assigned by ONTAP; reused after logout."
_TPG = "Target portal group, often the LIF name."
_FIRST = "Start of the first poll that saw it."
_LAST = "Start of the last ok poll that saw it (for an open one: the cluster's last ok poll)."
_ENDED = "Start of the first ok poll that saw it gone; null while open."
_OPENED_BY = "The poll that first saw it."
_CLOSED_BY = "The ok poll that first saw it gone."

COMMENTS: dict[str, tuple[str, str, dict[str, str]]] = {
    "clusters": (
        "TABLE",
        "One row per ONTAP cluster, identified by its uuid.",
        {
            "cluster_id": "Surrogate key.",
            "uuid": _CLUSTER_UUID,
            "name": "The cluster's name as ONTAP reports it.",
            "label": _CLUSTER_NAME + " Updated when the configuration renames it.",
            "version": "ONTAP version (version.full) at the last poll that reached it.",
            "first_seen_at": "Start of the first poll that reached the cluster.",
            "state_version": "Counts the polls that changed this cluster's history; lets a"
            " collector reuse its cached open state.",
        },
    ),
    "polls": (
        "TABLE",
        "Every poll attempt of a cluster, whatever its outcome.",
        {
            "poll_id": "Surrogate key; rows written by a poll carry it.",
            "cluster_id": "The cluster; null when the poll failed before the cluster identified"
            " itself.",
            "cluster_label": _CLUSTER_NAME,
            "started_at": "When the poll began (its observation time).",
            "finished_at": "When the walk of the collection ended.",
            "outcome": "ok (every page, every record valid), partial (some records rejected) or"
            " failed (no complete walk).",
            "page_count": "Pages fetched.",
            "session_count": "Valid sessions in the snapshot; null for a failed poll.",
            "connection_count": "Connections in the snapshot's sessions; null for a failed poll.",
            "rejected_count": "Records rejected as malformed (kept in rejected_records).",
            "event_count": "Events this poll recorded.",
            "error": "Why the poll failed or was partial; null when ok.",
            "collector": "host:pid of the collector that ran the poll.",
        },
    ),
    "svms": (
        "TABLE",
        "SVMs (vservers) seen in sessions, by uuid.",
        {"svm_id": "Surrogate key.", "cluster_id": "The cluster.", "uuid": "The SVM's ONTAP uuid."},
    ),
    "svm_names": (
        "TABLE",
        "The names of an SVM over time: one row per name.",
        {
            "svm_id": "The SVM.",
            "valid_from": "Start of the poll that first saw this name.",
            "valid_to": "Start of the poll that saw another name; null for the current one.",
            "name": "The SVM's name.",
        },
    ),
    "igroups": (
        "TABLE",
        "Initiator groups seen in sessions, by uuid.",
        {
            "igroup_id": "Surrogate key.",
            "cluster_id": "The cluster.",
            "uuid": "The igroup's ONTAP uuid.",
        },
    ),
    "igroup_names": (
        "TABLE",
        "The names of an igroup over time: one row per name.",
        {
            "igroup_id": "The igroup.",
            "valid_from": "Start of the poll that first saw this name.",
            "valid_to": "Start of the poll that saw another name; null for the current one.",
            "name": "The igroup's name.",
        },
    ),
    "interfaces": (
        "TABLE",
        "Network interfaces (LIFs) at the target end of connections.",
        {
            "interface_id": "Surrogate key.",
            "cluster_id": "The cluster.",
            "uuid": "The LIF's ONTAP uuid.",
        },
    ),
    "interface_versions": (
        "TABLE",
        "A LIF's name and address over time: one row per version.",
        {
            "interface_id": "The LIF.",
            "valid_from": "Start of the poll that first saw this version.",
            "valid_to": "Start of the poll that saw another version; null for the current one.",
            "name": "The LIF's name.",
            "address": "The LIF's IP address.",
            "port": "The iSCSI TCP port (ONTAP: 3260).",
        },
    ),
    "sessions": (
        "TABLE",
        "One row per iSCSI session lifetime: (cluster, SVM, target portal"
        " group, TSIH, ISID, initiator name). A reused TSIH is a new row.",
        {
            "session_id": "Surrogate key.",
            "cluster_id": "The cluster.",
            "svm_id": "The SVM.",
            "target_portal_group": _TPG,
            "tsih": _TSIH,
            "isid": _ISID,
            "initiator_name": _INITIATOR,
            "target_portal_group_tag": "Target portal group tag (integer).",
            "initiator_alias": "The initiator's alias, as last seen; changes are session_changed"
            " events.",
            "initiator_comment": "The initiator's comment (newer ONTAP releases), as last seen.",
            "first_seen_at": _FIRST,
            "last_seen_at": "Start of the last ok poll that saw it; written when it closes"
            " (session_history computes it for open sessions).",
            "ended_at": _ENDED,
            "opened_by_poll_id": _OPENED_BY,
            "closed_by_poll_id": _CLOSED_BY,
        },
    ),
    "connections": (
        "TABLE",
        "One row per connection lifetime (session + cid). A connection"
        " whose address, port, authentication or LIF changes ends and a new row"
        " starts, so every row is true for its whole span.",
        {
            "connection_id": "Surrogate key.",
            "session_id": "The session.",
            "cid": "Connection id within the session (MC/S sessions have several).",
            "authentication_type": "chap or none.",
            "initiator_address": "The initiator's IP address (IPv4 or IPv6).",
            "initiator_port": "The initiator's TCP port.",
            "interface_id": "The LIF at the target end.",
            "first_seen_at": _FIRST,
            "last_seen_at": "Start of the last ok poll that saw it; written when it closes.",
            "ended_at": _ENDED,
            "opened_by_poll_id": _OPENED_BY,
            "closed_by_poll_id": _CLOSED_BY,
        },
    ),
    "session_igroups": (
        "TABLE",
        "Igroup membership of a session over time: one row per interval.",
        {
            "session_id": "The session.",
            "igroup_id": "The igroup.",
            "joined_at": "Start of the poll that first saw the membership.",
            "left_at": "Start of the poll that saw it gone; null while a member.",
            "joined_by_poll_id": _OPENED_BY,
            "left_by_poll_id": _CLOSED_BY,
        },
    ),
    "events": (
        "TABLE",
        "The audit log, append-only (UPDATE, DELETE and TRUNCATE are refused)"
        " and hash-chained per cluster.",
        {
            "event_id": "Surrogate key; increases with commit order within a cluster.",
            "cluster_id": "The cluster.",
            "poll_id": "The poll that saw the change.",
            "kind": f"One of: {_EVENT_KINDS}.",
            "observed_at": _OBSERVED,
            "occurred_after": _AFTER,
            "session_id": "The session; null for SVM, igroup and LIF events.",
            "details": "What changed, as JSON (see docs/schema.md for each kind).",
            "prev_hash": "hash of the cluster's previous event (32 zero bytes for the first).",
            "hash": "SHA-256 over prev_hash and this event's content: editing or removing an"
            " event breaks the chain.",
        },
    ),
    "rejected_records": (
        "TABLE",
        "Session records ONTAP sent that failed validation, kept raw.",
        {
            "rejected_id": "Surrogate key.",
            "poll_id": "The (partial) poll.",
            "page": "The page it came on (1-based).",
            "reason": "What was wrong, by field.",
            "raw": "The record as ONTAP sent it.",
        },
    ),
    "sink_positions": (
        "TABLE",
        "How far each configured event sink (syslog, webhook, file) has delivered the"
        " events: a sink resumes after its position when the collector restarts.",
        {
            "sink_name": "The sink's name in the configuration ([[sinks]] name).",
            "last_event_id": "The last event the sink delivered; every event up to it has been"
            " delivered at least once (0: none yet).",
            "updated_at": "When the position or the error last changed.",
            "last_error": "Why the latest delivery attempt failed; null once one succeeds.",
        },
    ),
    "session_events": (
        "VIEW",
        "Every audit event with the session it concerns.",
        {
            "event_id": "The event.",
            "cluster_name": _CLUSTER_NAME,
            "kind": f"One of: {_EVENT_KINDS}.",
            "observed_at": _OBSERVED,
            "occurred_after": _AFTER,
            "svm_name": _SVM_NAME,
            "initiator_name": _INITIATOR,
            "isid": _ISID,
            "tsih": _TSIH,
            "target_portal_group": _TPG,
            "details": "What changed, as JSON.",
            "session_id": "The session (session_history); null for SVM, igroup and LIF events.",
            "poll_id": "The poll that saw the change (poll_log).",
            "cluster_uuid": _CLUSTER_UUID,
        },
    ),
    "session_history": (
        "VIEW",
        "Every session lifetime, open or ended.",
        {
            "session_id": "The session.",
            "cluster_name": _CLUSTER_NAME,
            "svm_name": "The SVM's name (its latest while open, else when the session ended).",
            "initiator_name": _INITIATOR,
            "initiator_alias": "The initiator's alias.",
            "isid": _ISID,
            "tsih": _TSIH,
            "target_portal_group": _TPG,
            "first_seen_at": _FIRST,
            "last_seen_at": _LAST,
            "ended_at": _ENDED,
            "target_portal_group_tag": "Target portal group tag.",
            "initiator_comment": "The initiator's comment.",
            "is_open": "True while the session is open.",
            "open_connections": "Connections open now (0 for an ended session).",
            "opened_by_poll_id": _OPENED_BY,
            "closed_by_poll_id": _CLOSED_BY,
            "cluster_uuid": _CLUSTER_UUID,
        },
    ),
    "connection_history": (
        "VIEW",
        "Every connection lifetime with its session, address,"
        " LIF and authentication: the forensic view.",
        {
            "connection_id": "The connection.",
            "session_id": "The session.",
            "cluster_name": _CLUSTER_NAME,
            "svm_name": _SVM_NAME,
            "initiator_name": _INITIATOR,
            "isid": _ISID,
            "tsih": _TSIH,
            "target_portal_group": _TPG,
            "cid": "Connection id within the session.",
            "authentication_type": "chap or none.",
            "initiator_address": "The initiator's IP address.",
            "initiator_port": "The initiator's TCP port.",
            "interface_name": "The LIF's name when the connection was first seen.",
            "interface_address": "The LIF's address when the connection was first seen.",
            "interface_port": "The LIF's iSCSI port.",
            "interface_uuid": "The LIF's uuid.",
            "first_seen_at": _FIRST,
            "last_seen_at": _LAST,
            "ended_at": _ENDED,
        },
    ),
    "poll_log": (
        "VIEW",
        "Every poll attempt with its outcome.",
        {
            "poll_id": "The poll.",
            "cluster_name": "The cluster's label in the collector's configuration at the time"
        " of the poll.",
            "started_at": "When the poll began.",
            "finished_at": "When the walk ended.",
            "outcome": "ok, partial or failed.",
            "session_count": "Valid sessions seen; null for a failed poll.",
            "error": "Why it failed or was partial.",
            "connection_count": "Connections seen.",
            "rejected_count": "Records rejected.",
            "event_count": "Events recorded.",
            "page_count": "Pages fetched.",
            "duration": "finished_at - started_at.",
            "collector": "host:pid of the collector.",
            "cluster_uuid": _CLUSTER_UUID,
        },
    ),
}


def apply_comments(conn: Connection) -> None:
    """COMMENT ON each relation and column that exists now (migrations call this last)."""
    existing = _existing_columns(conn)
    for relation, (kind, about, columns) in COMMENTS.items():
        if relation not in existing:
            continue
        conn.execute(text(f"COMMENT ON {kind} {SCHEMA}.{relation} IS {_literal(about)}"))
        for column, note in columns.items():
            if column in existing[relation]:
                conn.execute(
                    text(f"COMMENT ON COLUMN {SCHEMA}.{relation}.{column} IS {_literal(note)}")
                )


def annotate(metadata: MetaData) -> None:
    """Copy the table and column comments onto the models."""
    for table in metadata.tables.values():
        _, about, columns = COMMENTS[table.name]
        table.comment = about
        for column in table.columns:
            column.comment = columns[column.name]


def _existing_columns(conn: Connection) -> dict[str, set[str]]:
    rows = conn.execute(
        text(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = :s"
        ),
        {"s": SCHEMA},
    )
    existing: dict[str, set[str]] = {}
    for relation, column in rows:
        existing.setdefault(relation, set()).add(column)
    return existing


def _literal(note: str) -> str:
    # COMMENT ON takes no bind parameters; the text is ours, quoting is for apostrophes
    return "'" + note.replace("'", "''") + "'"
