"""What a long-running collector keeps of one cluster between two polls, and how a poll
that has it reads back only what changed.

Pure: the store does the reading and writing; this module says what to read and what the
result means.

A cluster's memory is the 16-byte digest of each open session's raw record, with the
session's row id and connection count, and the names of its SVMs, igroups and LIFs: about
130 bytes per session, measured. The next walk digests every record (it parses only those
whose digest is not remembered); an unchanged session then costs no parsing, no object and
no database read. What the poll reads back is the open sessions whose remembered record
was not seen again (ended or changed) and those named by a new record (changed or new):
the part of the open state the poll's events can be about. `diff` compares that part
with the new records exactly as it would compare the whole.

The memory holds as of the cluster's `state_version`: another collector's write bumps the
version, the poll finds its memory stale before writing anything, and starts over
without it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from collector.diff import OpenSession, State
from collector.snapshot import Interface, Session, SessionKey, Snapshot

_CONNECTIONS = 16  # low bits of a remembered value: the session's connection count


@dataclass
class Ids:
    """Surrogate keys of the open rows, so writes can address them."""

    sessions: dict[SessionKey, int] = field(default_factory=dict)
    svms: dict[str, int] = field(default_factory=dict)
    igroups: dict[str, int] = field(default_factory=dict)
    interfaces: dict[str, int] = field(default_factory=dict)

    def entities(self) -> Ids:
        """A copy of the SVM, igroup and LIF ids, without the sessions'."""
        return Ids({}, dict(self.svms), dict(self.igroups), dict(self.interfaces))


@dataclass
class ClusterMemory:
    """One cluster's memory; a collector passes the same one to each poll of the cluster."""

    cluster_id: int | None = None  # None: nothing remembered yet
    version: int = 0  # the cluster's state_version this memory describes
    # digest of the record of each open session -> session_id << 16 | connection count
    records: dict[bytes, int] = field(default_factory=dict)
    svms: dict[str, str | None] = field(default_factory=dict)
    igroups: dict[str, str | None] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    ids: Ids = field(default_factory=Ids)  # of the SVMs, igroups and LIFs only

    @property
    def sessions(self) -> int:
        return len(self.records)

    def known(self) -> Mapping[bytes, int] | None:
        """The digests a walk need not parse again, or None to parse them all."""
        return self.records if self.cluster_id is not None else None

    def forget(self) -> None:
        self.cluster_id, self.version, self.records = None, 0, {}
        self.svms, self.igroups, self.interfaces = {}, {}, {}
        self.ids = Ids()

    def remember(
        self, cluster_id: int, version: int, state: State, records: dict[bytes, int], ids: Ids
    ) -> None:
        """What a poll leaves: its open sessions' records, and the names and ids of the
        cluster's SVMs, igroups and LIFs after it."""
        self.cluster_id, self.version, self.records = cluster_id, version, records
        self.svms, self.igroups = dict(state.svms), dict(state.igroups)
        self.interfaces, self.ids = dict(state.interfaces), ids.entities()


def remembered(session_id: int, session: Session) -> int:
    return session_id << _CONNECTIONS | min(len(session.connections), (1 << _CONNECTIONS) - 1)


def unseen(session_id: int) -> bytes:
    """A stand-in digest for an open session no record stands for (a partial poll left it
    open without seeing it): no walk yields it, so the next poll always reads it back."""
    return b"\xff" * 8 + session_id.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class Lookup:
    """The open sessions a poll must read back: by id, those whose remembered record was
    not seen again; by key, those a new or changed record names."""

    session_ids: list[int]
    keys: list[SessionKey]


def lookup(memory: ClusterMemory, snapshot: Snapshot) -> Lookup:
    seen = snapshot.unchanged
    return Lookup(
        session_ids=[value >> _CONNECTIONS for d, value in memory.records.items() if d not in seen],
        keys=list(snapshot.sessions),
    )


@dataclass(frozen=True, slots=True)
class Delta:
    """What a remembering poll compares: `previous`, the part of the open state read back,
    and `current`, the records that may change it. Also the walk's totals."""

    previous: dict[SessionKey, OpenSession]
    current: dict[SessionKey, Session]
    replaced: frozenset[int]  # ids of sessions a current record stands for now
    session_count: int
    connection_count: int


def resolve(
    memory: ClusterMemory,
    snapshot: Snapshot,
    asked: Lookup,
    read_back: Mapping[SessionKey, tuple[OpenSession, int]],
) -> Delta:
    """Compare what was read back with the new records, as a full walk would.

    A session can be seen twice in one walk (its record moved between pages), once with
    its remembered record and once with a new one: the later sighting wins, as it does in
    `SnapshotBuilder`.
    """
    previous = {key: open_ for key, (open_, _) in read_back.items()}
    current = dict(snapshot.sessions)
    ids = {key: session_id for key, (_, session_id) in read_back.items()}
    vanished = set(asked.session_ids)
    seen_again = {i: key for key, i in ids.items() if key in current and i not in vanished}
    if seen_again:
        last_seen = {
            value >> _CONNECTIONS: snapshot.unchanged[d]
            for d, value in memory.records.items()
            if d in snapshot.unchanged and value >> _CONNECTIONS in seen_again
        }
        for session_id, key in seen_again.items():
            if last_seen[session_id] > snapshot.positions[key]:  # the remembered one is later
                del current[key], previous[key]
    replaced = frozenset(ids[key] for key in current if key in ids)
    unchanged = [
        value
        for d, value in memory.records.items()
        if d in snapshot.unchanged and value >> _CONNECTIONS not in replaced
    ]
    mask = (1 << _CONNECTIONS) - 1
    return Delta(
        previous=previous,
        current=current,
        replaced=replaced,
        session_count=len(unchanged) + len(current),
        connection_count=sum(v & mask for v in unchanged)
        + sum(len(s.connections) for s in current.values()),
    )


def after_full_poll(
    state: State, snapshot: Snapshot, session_ids: Mapping[SessionKey, int]
) -> dict[bytes, int]:
    """The records to remember after a poll that parsed every record."""
    records = {}
    for key, open_ in state.sessions.items():
        session_id = session_ids[key]
        digest = snapshot.digests[key] if key in snapshot.sessions else unseen(session_id)
        records[digest] = remembered(session_id, open_.session)
    return records


def after_delta_poll(
    memory: ClusterMemory,
    delta: Delta,
    snapshot: Snapshot,
    closed: set[int],
    session_ids: Mapping[SessionKey, int],
) -> dict[bytes, int]:
    """The records to remember after a remembering poll: the old ones, less the sessions
    that ended or are now stood for by a new record, plus the new records."""
    gone = closed | delta.replaced
    records = memory.records
    if gone:
        records = {d: v for d, v in records.items() if v >> _CONNECTIONS not in gone}
    for key, session in delta.current.items():
        records[snapshot.digests[key]] = remembered(session_ids[key], session)
    return records
