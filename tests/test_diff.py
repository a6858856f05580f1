from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.diff import EventKind, PollOutcome, State, diff
from collector.snapshot import (
    Connection,
    IgroupRef,
    Interface,
    Session,
    SessionKey,
    Snapshot,
    SnapshotBuilder,
)
from tests.ontap_pages import session_record

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)
OK, PARTIAL, FAILED = PollOutcome.OK, PollOutcome.PARTIAL, PollOutcome.FAILED


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def snapshot_of(*records: dict[str, Any]) -> Snapshot:
    builder = SnapshotBuilder()
    builder.add_page([orjson.dumps(r) for r in records])
    return builder.build()


def run(*polls: tuple[Snapshot, PollOutcome]) -> tuple[State, list[list[Any]]]:
    """Apply polls one minute apart; return the final state and each poll's events."""
    state = State()
    events = []
    for minute, (snapshot, outcome) in enumerate(polls):
        changes = diff(state, snapshot, outcome, at(minute))
        state = changes.state
        events.append(list(changes.events))
    return state, events


def kinds(events: list[Any]) -> list[str]:
    return [e.kind.value for e in events]


# --- named cases ------------------------------------------------------------------------


def test_first_ok_poll_connects_every_session_with_no_earlier_bound() -> None:
    _, [events] = run((snapshot_of(session_record(1), session_record(2)), OK))

    assert kinds(events) == ["connect", "connect"]
    assert all(e.observed_at == at(0) and e.occurred_after is None for e in events)


def test_logout_is_a_disconnect_bounded_by_the_last_ok_poll() -> None:
    one = snapshot_of(session_record(1))
    _, [_, _, events] = run((one, OK), (one, OK), (snapshot_of(), OK))

    [disconnect] = events
    assert disconnect.kind is EventKind.DISCONNECT
    assert (disconnect.occurred_after, disconnect.observed_at) == (at(1), at(2))


def test_tsih_reuse_by_another_initiator_is_a_disconnect_and_a_connect() -> None:
    before = snapshot_of(session_record(1, tsih=5, initiator="iqn.2000-01.com.a:one"))
    after = snapshot_of(session_record(2, tsih=5, initiator="iqn.2000-01.com.b:two"))

    _, [_, events] = run((before, OK), (after, OK))

    assert sorted(kinds(events)) == ["connect", "disconnect"]
    connect = next(e for e in events if e.kind is EventKind.CONNECT)
    assert connect.key is not None and connect.key.initiator_name == "iqn.2000-01.com.b:two"


def test_outage_widens_the_window_and_never_produces_events() -> None:
    one = snapshot_of(session_record(1))
    state, events = run((one, OK), (Snapshot({}), FAILED), (Snapshot({}), FAILED),
                        (snapshot_of(), OK))

    assert events[1] == [] and events[2] == []
    [disconnect] = events[3]
    # the logout happened somewhere in the outage: after the last ok poll, seen at recovery
    assert (disconnect.occurred_after, disconnect.observed_at) == (at(0), at(3))
    assert state.sessions == {}


def test_failed_poll_changes_nothing() -> None:
    state, _ = run((snapshot_of(session_record(1)), OK))

    changes = diff(state, Snapshot({}), FAILED, at(5))

    assert not changes and changes.state is state


def test_partial_poll_opens_but_never_closes() -> None:
    partial = snapshot_of(session_record(2))
    state, [_, events] = run((snapshot_of(session_record(1)), OK), (partial, PARTIAL))

    assert kinds(events) == ["connect"]
    assert len(state.sessions) == 2
    assert state.last_ok_at == at(0)


def test_empty_ok_snapshot_closes_everything() -> None:
    state, [_, events] = run((snapshot_of(*(session_record(n) for n in range(1, 6))), OK),
                             (snapshot_of(), OK))

    assert kinds(events) == ["disconnect"] * 5
    assert state.sessions == {}


def test_repeated_snapshot_yields_no_events() -> None:
    snapshot = snapshot_of(session_record(1), session_record(2, cids=(1, 2)))
    _, [first, second] = run((snapshot, OK), (snapshot, OK))

    assert len(first) == 2 and second == []


def test_connection_added_removed_and_changed_by_cid() -> None:
    _, [_, events] = run((snapshot_of(session_record(1, cids=(1, 2))), OK),
                         (snapshot_of(session_record(1, cids=(2, 3), auth="none")), OK))

    assert kinds(events) == ["connection_removed", "connection_changed", "connection_added"]
    changed = events[1]
    assert changed.details["cid"] == 2
    assert changed.details["authentication_type"] == {"before": "chap", "after": "none"}


def test_igroup_membership_joined_and_left() -> None:
    _, [_, events] = run((snapshot_of(session_record(1, igroups=("ig-a",))), OK),
                         (snapshot_of(session_record(1, igroups=("ig-b", "ig-c"))), OK))

    assert kinds(events) == ["igroup_joined", "igroup_joined", "igroup_left"]
    assert [e.details["name"] for e in events] == ["ig-b", "ig-c", "ig-a"]


def test_igroup_rename_is_one_event_and_no_membership_change() -> None:
    first = session_record(1, igroups=("ig-a",))
    renamed = session_record(1, igroups=("ig-a",))
    renamed["igroups"][0]["name"] = "ig-a-prod"

    _, [_, events] = run((snapshot_of(first), OK), (snapshot_of(renamed), OK))

    [event] = events
    assert event.kind is EventKind.IGROUP_RENAMED
    assert event.details["name"] == {"before": "ig-a", "after": "ig-a-prod"}


def test_alias_change_is_a_session_changed_event() -> None:
    _, [_, events] = run((snapshot_of(session_record(1, alias="db01")), OK),
                         (snapshot_of(session_record(1, alias="db01-new")), OK))

    [changed] = events
    assert changed.kind is EventKind.SESSION_CHANGED
    assert changed.details == {"initiator_alias": {"before": "db01", "after": "db01-new"}}


def test_lif_address_change_is_one_event_not_one_per_session() -> None:
    before = snapshot_of(*(session_record(n, lif_address="192.0.2.10") for n in range(1, 4)))
    after = snapshot_of(*(session_record(n, lif_address="192.0.2.99") for n in range(1, 4)))

    _, [_, events] = run((before, OK), (after, OK))

    [changed] = events
    assert changed.kind is EventKind.INTERFACE_CHANGED
    assert changed.details["address"] == {"before": "192.0.2.10", "after": "192.0.2.99"}


def test_connect_details_carry_address_lif_and_authentication() -> None:
    _, [[connect]] = run((snapshot_of(session_record(1, address="2001:db8::7")), OK))

    [connection] = connect.details["connections"]
    assert connection["initiator_address"] == "2001:db8::7"
    assert connection["authentication_type"] == "chap"
    assert connection["interface"]["name"] == "lif1"


# --- properties ---------------------------------------------------------------------------

SVM = "02c9e252-41be-11e9-81d5-00a0986138f7"
KEYS = [SessionKey(SVM, tpg, tsih, isid, initiator)
        for tpg in ("lif1", "lif2") for tsih in (1, 2) for isid in ("40:00:01:37:00:01",
                                                                     "40:00:01:37:00:02")
        for initiator in ("iqn.2000-01.com.x:h1", "iqn.2000-01.com.x:h2")]
IGROUPS = ["ig-0", "ig-1", "ig-2"]
LIFS = ["lif-0", "lif-1"]


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    svm_name = draw(st.sampled_from(["svm1", "svm1-renamed"]))
    igroup_names = {u: draw(st.sampled_from([f"{u}-a", f"{u}-b"])) for u in IGROUPS}
    lifs = {u: Interface(u, draw(st.sampled_from(["e0a", "e0b"])),
                         draw(st.sampled_from(["192.0.2.1", "2001:db8::1"])), 3260)
            for u in LIFS}
    sessions = {}
    for key in draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=6)):
        cids = draw(st.lists(st.integers(0, 3), unique=True, max_size=3))
        connections = tuple(Connection(
            cid, draw(st.sampled_from(["chap", "none", None])),
            draw(st.sampled_from(["198.51.100.1", "2001:db8::2", None])),
            draw(st.sampled_from([50000, 50001])),
            lifs[draw(st.sampled_from(LIFS))] if draw(st.booleans()) else None,
        ) for cid in sorted(cids))
        groups = draw(st.lists(st.sampled_from(IGROUPS), unique=True, max_size=2))
        sessions[key] = Session(
            key, svm_name, draw(st.sampled_from([1000, 1001, None])),
            draw(st.sampled_from(["db", "web", None])), draw(st.sampled_from(["c", None])),
            tuple(sorted(IgroupRef(u, igroup_names[u]) for u in groups)), connections)
    return Snapshot(sessions)


polls = st.lists(st.tuples(snapshots(), st.sampled_from(list(PollOutcome))), max_size=8)


def project(session: Session) -> dict[str, Any]:
    """What the events must let a reader reconstruct about an open session."""
    return {
        "initiator_alias": session.initiator_alias,
        "initiator_comment": session.initiator_comment,
        "target_portal_group_tag": session.target_portal_group_tag,
        "igroups": {g.uuid for g in session.igroups},
        "connections": {c.cid: (c.authentication_type, c.initiator_address, c.initiator_port,
                                c.interface.uuid if c.interface else None)
                        for c in session.connections},
    }


def replay(events: list[Any]) -> dict[SessionKey, dict[str, Any]]:
    """Rebuild open sessions from the events' JSON details alone, as a SQL reader would."""
    open_sessions: dict[SessionKey, dict[str, Any]] = {}
    for event in events:
        d, key = event.details, event.key
        match event.kind:
            case EventKind.CONNECT:
                open_sessions[key] = {
                    "initiator_alias": d["initiator_alias"],
                    "initiator_comment": d["initiator_comment"],
                    "target_portal_group_tag": d["target_portal_group_tag"],
                    "igroups": {g["uuid"] for g in d["igroups"]},
                    "connections": {c["cid"]: _connection(c) for c in d["connections"]},
                }
            case EventKind.DISCONNECT:
                del open_sessions[key]
            case EventKind.SESSION_CHANGED:
                for name, change in d.items():
                    open_sessions[key][name] = change["after"]
            case EventKind.CONNECTION_ADDED:
                open_sessions[key]["connections"][d["cid"]] = _connection(d)
            case EventKind.CONNECTION_REMOVED:
                del open_sessions[key]["connections"][d["cid"]]
            case EventKind.CONNECTION_CHANGED:
                auth, address, port, lif = open_sessions[key]["connections"][d["cid"]]
                after = {k: v["after"] for k, v in d.items() if k != "cid"}
                lif = (after["interface"] or {}).get("uuid") if "interface" in after else lif
                open_sessions[key]["connections"][d["cid"]] = (
                    after.get("authentication_type", auth),
                    after.get("initiator_address", address),
                    after.get("initiator_port", port), lif)
            case EventKind.IGROUP_JOINED:
                open_sessions[key]["igroups"].add(d["uuid"])
            case EventKind.IGROUP_LEFT:
                open_sessions[key]["igroups"].discard(d["uuid"])
    return open_sessions


def _connection(d: dict[str, Any]) -> tuple[Any, ...]:
    lif = d["interface"]["uuid"] if d["interface"] else None
    return (d["authentication_type"], d["initiator_address"], d["initiator_port"], lif)


@settings(max_examples=300, deadline=None)
@given(polls)
def test_replaying_the_events_reconstructs_the_open_state(sequence) -> None:
    state, events = run(*sequence)

    replayed = replay([e for poll in events for e in poll])

    assert replayed == {k: project(s.session) for k, s in state.sessions.items()}


@settings(max_examples=200, deadline=None)
@given(polls, snapshots(), st.sampled_from([OK, PARTIAL]))
def test_a_repeated_snapshot_yields_no_events(sequence, snapshot, outcome) -> None:
    state, _ = run(*sequence)
    once = diff(state, snapshot, outcome, at(100))

    again = diff(once.state, snapshot, outcome, at(101))

    assert again.events == ()


@settings(max_examples=200, deadline=None)
@given(polls, snapshots(), st.sampled_from([PARTIAL, FAILED]))
def test_no_failed_or_partial_poll_closes_a_session(sequence, snapshot, outcome) -> None:
    state, _ = run(*sequence)

    changes = diff(state, snapshot, outcome, at(100))

    assert EventKind.DISCONNECT not in {e.kind for e in changes.events}
    assert state.sessions.keys() <= changes.state.sessions.keys()


@settings(max_examples=200, deadline=None)
@given(polls, snapshots())
def test_every_event_lies_in_its_window(sequence, snapshot) -> None:
    state, _ = run(*sequence)

    for event in diff(state, snapshot, OK, at(100)).events:
        assert event.observed_at == at(100)
        assert event.occurred_after is None or event.occurred_after < event.observed_at
