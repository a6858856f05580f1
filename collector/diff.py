"""Previous open state + a new snapshot + the poll's outcome -> audit events and next state.

Pure: no clock (time comes in as `observed_at`), no I/O. The rules of DESIGN.md live here:

- only an `ok` poll may close a session (a `partial` poll may open and update);
- a `failed` poll changes nothing;
- every event carries `observed_at` (this poll) and `occurred_after` (the last `ok` poll
  that saw the previous state), so a change is known to lie in that window;
- the same snapshot applied twice yields no events the second time.

Names of SVMs and igroups and the addresses of LIFs belong to those objects, not to the
sessions that mention them: a renamed igroup is one `igroup_renamed` event, not one event
per session in it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from collector.snapshot import Connection, IgroupRef, Interface, Session, SessionKey, Snapshot

V = TypeVar("V")


class PollOutcome(StrEnum):
    OK = "ok"
    PARTIAL = "partial"
    FAILED = "failed"

    @property
    def may_open(self) -> bool:
        return self is not PollOutcome.FAILED

    @property
    def may_close(self) -> bool:
        return self is PollOutcome.OK


class EventKind(StrEnum):
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    CONNECTION_ADDED = "connection_added"
    CONNECTION_REMOVED = "connection_removed"
    CONNECTION_CHANGED = "connection_changed"
    IGROUP_JOINED = "igroup_joined"
    IGROUP_LEFT = "igroup_left"
    SESSION_CHANGED = "session_changed"
    SVM_RENAMED = "svm_renamed"
    IGROUP_RENAMED = "igroup_renamed"
    INTERFACE_CHANGED = "interface_changed"


@dataclass(frozen=True, slots=True)
class OpenSession:
    session: Session
    first_seen_at: datetime


@dataclass(frozen=True, slots=True)
class State:
    """What the history says is true of one cluster now."""

    sessions: Mapping[SessionKey, OpenSession] = field(default_factory=dict)
    svms: Mapping[str, str | None] = field(default_factory=dict)
    igroups: Mapping[str, str | None] = field(default_factory=dict)
    interfaces: Mapping[str, Interface] = field(default_factory=dict)
    last_ok_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Event:
    """One audit event. `details` is JSON-ready; the typed fields tell the store what to write."""

    kind: EventKind
    observed_at: datetime
    occurred_after: datetime | None
    details: Mapping[str, Any]
    key: SessionKey | None = None
    session: Session | None = None
    connection: Connection | None = None
    igroup: IgroupRef | None = None
    interface: Interface | None = None
    subject_uuid: str | None = None


@dataclass(frozen=True, slots=True)
class EntityVersions:
    """New or changed names/addresses of SVMs, igroups and LIFs, to version in the store."""

    svms: Mapping[str, str | None] = field(default_factory=dict)
    igroups: Mapping[str, str | None] = field(default_factory=dict)
    interfaces: Mapping[str, Interface] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.svms or self.igroups or self.interfaces)


@dataclass(frozen=True, slots=True)
class Changes:
    events: tuple[Event, ...]
    entities: EntityVersions
    state: State

    def __bool__(self) -> bool:
        return bool(self.events or self.entities)


@dataclass(frozen=True, slots=True)
class _Comparison:
    """How the snapshot's keys relate to the open state's."""

    opened: list[SessionKey]
    closed: list[SessionKey]
    updated: list[SessionKey]  # in both, and different

    @staticmethod
    def of(previous: State, snapshot: Snapshot, outcome: PollOutcome) -> _Comparison:
        seen, was = snapshot.sessions, previous.sessions
        opened = [k for k in seen if k not in was]
        unseen = len(was) - (len(seen) - len(opened))
        return _Comparison(
            opened=opened,
            closed=list(was.keys() - seen.keys()) if outcome.may_close and unseen else [],
            updated=[k for k in seen if (w := was.get(k)) is not None and w.session != seen[k]],
        )


def diff(
    previous: State, snapshot: Snapshot, outcome: PollOutcome, observed_at: datetime
) -> Changes:
    """Compare a snapshot with the open state; return the events and the state after them."""
    if not outcome.may_open:
        return Changes((), EntityVersions(), previous)
    comparison = _Comparison.of(previous, snapshot, outcome)
    changed = [snapshot.sessions[k] for k in (*comparison.opened, *comparison.updated)]
    entities = _entity_versions(previous, changed)
    events = [
        *_entity_events(previous, entities, observed_at),
        *_session_events(previous, snapshot, comparison, observed_at),
    ]
    state = _next_state(previous, snapshot, comparison, outcome, observed_at, entities)
    return Changes(tuple(events), entities, state)


# --- sessions ----------------------------------------------------------------------------


def _session_events(
    previous: State, snapshot: Snapshot, comparison: _Comparison, observed_at: datetime
) -> list[Event]:
    events: list[Event] = []
    for key in sorted({*comparison.opened, *comparison.closed, *comparison.updated}):
        seen = snapshot.sessions.get(key)
        was = previous.sessions.get(key)
        if was is None and seen is not None:
            events.append(
                _event(
                    EventKind.CONNECT,
                    observed_at,
                    previous.last_ok_at,
                    session_details(seen),
                    key,
                    session=seen,
                )
            )
        elif was is not None and seen is None:
            events.append(_disconnect(was, previous.last_ok_at, observed_at))
        elif was is not None and seen is not None:
            after = _later(previous.last_ok_at, was.first_seen_at)
            events.extend(_session_updates(was.session, seen, observed_at, after))
    return events


def _disconnect(was: OpenSession, last_ok_at: datetime | None, observed_at: datetime) -> Event:
    details = {
        "first_seen_at": was.first_seen_at.isoformat(),
        "connections": [c.cid for c in was.session.connections],
    }
    after = _later(last_ok_at, was.first_seen_at)
    return _event(
        EventKind.DISCONNECT, observed_at, after, details, was.session.key, session=was.session
    )


def _session_updates(
    was: Session, now: Session, observed_at: datetime, after: datetime | None
) -> list[Event]:
    key = now.key
    events: list[Event] = []
    changed = _changed_fields(
        was, now, ("initiator_alias", "initiator_comment", "target_portal_group_tag")
    )
    if changed:
        events.append(
            _event(EventKind.SESSION_CHANGED, observed_at, after, changed, key, session=now)
        )
    events.extend(_connection_events(was, now, observed_at, after))
    events.extend(_igroup_events(was, now, observed_at, after))
    return events


def _connection_events(
    was: Session, now: Session, observed_at: datetime, after: datetime | None
) -> list[Event]:
    before = {c.cid: c for c in was.connections}
    current = {c.cid: c for c in now.connections}
    events = []
    for cid in sorted(before.keys() | current.keys()):
        old, new = before.get(cid), current.get(cid)
        if old is None and new is not None:
            events.append(
                _event(
                    EventKind.CONNECTION_ADDED,
                    observed_at,
                    after,
                    connection_details(new),
                    now.key,
                    connection=new,
                )
            )
        elif new is None and old is not None:
            events.append(
                _event(
                    EventKind.CONNECTION_REMOVED,
                    observed_at,
                    after,
                    {"cid": cid},
                    now.key,
                    connection=old,
                )
            )
        elif (
            old is not None
            and new is not None
            and _connection_identity(old) != _connection_identity(new)
        ):
            details = {"cid": cid, **_changed_connection_fields(old, new)}
            events.append(
                _event(
                    EventKind.CONNECTION_CHANGED,
                    observed_at,
                    after,
                    details,
                    now.key,
                    connection=new,
                )
            )
    return events


def _igroup_events(
    was: Session, now: Session, observed_at: datetime, after: datetime | None
) -> list[Event]:
    before = {g.uuid: g for g in was.igroups}
    current = {g.uuid: g for g in now.igroups}
    joined = [
        _event(
            EventKind.IGROUP_JOINED,
            observed_at,
            after,
            igroup_details(current[u]),
            now.key,
            igroup=current[u],
        )
        for u in sorted(current.keys() - before.keys())
    ]
    left = [
        _event(
            EventKind.IGROUP_LEFT,
            observed_at,
            after,
            igroup_details(before[u]),
            now.key,
            igroup=before[u],
        )
        for u in sorted(before.keys() - current.keys())
    ]
    return joined + left


def _connection_identity(c: Connection) -> tuple[object, ...]:
    """What makes a connection the same connection: a change here is an audit event.

    The LIF is compared by uuid: a LIF whose address changes is the LIF's own event.
    """
    return (
        c.authentication_type,
        c.initiator_address,
        c.initiator_port,
        c.interface.uuid if c.interface else None,
    )


def _changed_connection_fields(old: Connection, new: Connection) -> dict[str, Any]:
    changed = _changed_fields(
        old, new, ("authentication_type", "initiator_address", "initiator_port")
    )
    old_lif = old.interface.uuid if old.interface else None
    new_lif = new.interface.uuid if new.interface else None
    if old_lif != new_lif:
        changed["interface"] = {
            "before": interface_details(old.interface),
            "after": interface_details(new.interface),
        }
    return changed


# --- SVMs, igroups, LIFs -------------------------------------------------------------------


def _entity_versions(previous: State, changed: Iterable[Session]) -> EntityVersions:
    """Names and addresses from the new or changed sessions (an unchanged session names
    nothing the state does not know already)."""
    svms: dict[str, str | None] = {}
    igroups: dict[str, str | None] = {}
    interfaces: dict[str, Interface] = {}
    for session in changed:
        svms[session.key.svm_uuid] = session.svm_name
        for group in session.igroups:
            igroups[group.uuid] = group.name
        for connection in session.connections:
            if connection.interface is not None:
                interfaces[connection.interface.uuid] = connection.interface
    return EntityVersions(
        svms=_new_or_changed(previous.svms, svms),
        igroups=_new_or_changed(previous.igroups, igroups),
        interfaces=_new_or_changed(previous.interfaces, interfaces),
    )


def _entity_events(previous: State, entities: EntityVersions, observed_at: datetime) -> list[Event]:
    """Renames of things already known; a first sighting is a version, not an event."""
    after = previous.last_ok_at
    events = []
    for uuid, name in sorted(entities.svms.items()):
        if uuid in previous.svms:
            events.append(
                _event(
                    EventKind.SVM_RENAMED,
                    observed_at,
                    after,
                    {"svm_uuid": uuid, "name": {"before": previous.svms[uuid], "after": name}},
                    subject_uuid=uuid,
                )
            )
    for uuid, name in sorted(entities.igroups.items()):
        if uuid in previous.igroups:
            events.append(
                _event(
                    EventKind.IGROUP_RENAMED,
                    observed_at,
                    after,
                    {
                        "igroup_uuid": uuid,
                        "name": {"before": previous.igroups[uuid], "after": name},
                    },
                    subject_uuid=uuid,
                )
            )
    for uuid, interface in sorted(entities.interfaces.items()):
        if uuid in previous.interfaces:
            details = {
                "interface_uuid": uuid,
                **_changed_fields(
                    previous.interfaces[uuid], interface, ("name", "address", "port")
                ),
            }
            events.append(
                _event(
                    EventKind.INTERFACE_CHANGED,
                    observed_at,
                    after,
                    details,
                    interface=interface,
                    subject_uuid=uuid,
                )
            )
    return events


# --- the next state ------------------------------------------------------------------------


def _next_state(
    previous: State,
    snapshot: Snapshot,
    comparison: _Comparison,
    outcome: PollOutcome,
    observed_at: datetime,
    entities: EntityVersions,
) -> State:
    if not (comparison.opened or comparison.closed or comparison.updated):
        sessions = previous.sessions  # nothing to copy: an unchanged poll of 100k sessions
    else:
        sessions = _apply(previous.sessions, snapshot, comparison, observed_at)
    return replace(
        previous,
        sessions=sessions,
        svms={**previous.svms, **entities.svms},
        igroups={**previous.igroups, **entities.igroups},
        interfaces={**previous.interfaces, **entities.interfaces},
        last_ok_at=observed_at if outcome is PollOutcome.OK else previous.last_ok_at,
    )


def _apply(
    was: Mapping[SessionKey, OpenSession],
    snapshot: Snapshot,
    comparison: _Comparison,
    observed_at: datetime,
) -> dict[SessionKey, OpenSession]:
    sessions = dict(was)
    for key in comparison.closed:
        del sessions[key]
    for key in comparison.opened:
        sessions[key] = OpenSession(snapshot.sessions[key], observed_at)
    for key in comparison.updated:
        sessions[key] = OpenSession(snapshot.sessions[key], sessions[key].first_seen_at)
    return sessions


# --- details: the JSON an event carries --------------------------------------------------


def session_details(session: Session) -> dict[str, Any]:
    return {
        "svm_name": session.svm_name,
        "target_portal_group_tag": session.target_portal_group_tag,
        "initiator_alias": session.initiator_alias,
        "initiator_comment": session.initiator_comment,
        "igroups": [igroup_details(g) for g in session.igroups],
        "connections": [connection_details(c) for c in session.connections],
    }


def connection_details(connection: Connection) -> dict[str, Any]:
    return {
        "cid": connection.cid,
        "authentication_type": connection.authentication_type,
        "initiator_address": connection.initiator_address,
        "initiator_port": connection.initiator_port,
        "interface": interface_details(connection.interface),
    }


def interface_details(interface: Interface | None) -> dict[str, Any] | None:
    if interface is None:
        return None
    return {
        "uuid": interface.uuid,
        "name": interface.name,
        "address": interface.address,
        "port": interface.port,
    }


def igroup_details(group: IgroupRef) -> dict[str, Any]:
    return {"uuid": group.uuid, "name": group.name}


# --- small pieces --------------------------------------------------------------------------


def _event(
    kind: EventKind,
    observed_at: datetime,
    occurred_after: datetime | None,
    details: Mapping[str, Any],
    key: SessionKey | None = None,
    **typed: Any,
) -> Event:
    return Event(kind, observed_at, occurred_after, details, key, **typed)


def _changed_fields(old: object, new: object, names: Iterable[str]) -> dict[str, Any]:
    return {
        name: {"before": getattr(old, name), "after": getattr(new, name)}
        for name in names
        if getattr(old, name) != getattr(new, name)
    }


def _new_or_changed(known: Mapping[str, V], seen: Mapping[str, V]) -> dict[str, V]:
    return {uuid: value for uuid, value in seen.items() if known.get(uuid, _MISSING) != value}


def _later(a: datetime | None, b: datetime) -> datetime:
    return b if a is None or b > a else a


_MISSING = object()
