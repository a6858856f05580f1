"""A remembering collector (`run`: only new and changed records parsed, only the sessions
they touch read back) must record exactly what a forgetful one (`collect --once`) does.
Walks of random records, with repeats within a walk and partial and failed polls, go
through the real store twice, once each way, and their events must be equal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, text

from collector.db.memory import ClusterMemory
from collector.db.store import HistoryStore, PollRecord
from collector.diff import PollOutcome
from collector.ontap.resources import ClusterIdentity
from collector.pipeline import store_snapshot
from collector.snapshot import SnapshotBuilder
from tests.ontap_pages import session_record

OK, PARTIAL, FAILED = PollOutcome.OK, PollOutcome.PARTIAL, PollOutcome.FAILED
T0 = datetime(2026, 12, 1, tzinfo=UTC)

# few sessions and few variants of each, so that walks repeat, change and drop them
record_variants = st.builds(
    lambda n, tsih, alias, cids, groups: session_record(n, tsih=tsih, alias=alias, cids=cids,
                                                        igroups=groups),
    st.integers(1, 6), st.integers(1, 3), st.sampled_from(["db", "web", None]),
    st.sampled_from([(1,), (1, 2), (2,)]), st.sampled_from([("a",), ("a", "b"), ()]))


@st.composite
def walks(draw: st.DrawFn) -> list[tuple[list[list[dict[str, Any]]], PollOutcome]]:
    """Walks drawn from one small pool of records: most records of a walk were in the
    last one too, byte for byte, as on a real cluster."""
    pool = draw(st.lists(record_variants, min_size=1, max_size=8))
    page = st.lists(st.sampled_from(pool), max_size=5)
    outcome = st.sampled_from([OK, OK, PARTIAL, FAILED])
    return draw(st.lists(st.tuples(st.lists(page, max_size=3), outcome), min_size=1,
                         max_size=8))


def replay(store: HistoryStore, engine: Engine, sequence: Any,
           memory: ClusterMemory | None) -> list[Any]:
    """Poll a cluster of its own through the store, one walk a minute; return its events
    and the session counts of its polls."""
    identity = ClusterIdentity(str(uuid4()), "prop", "9.15.1")
    for minute, (pages, outcome) in enumerate(sequence):
        moment = T0 + timedelta(minutes=minute)
        poll = PollRecord(identity.uuid, moment, moment, outcome)
        if outcome is FAILED:
            store.record_failure(poll, identity)
            continue
        builder = SnapshotBuilder(memory.known() if memory is not None else None)
        for page in pages:
            builder.add_page([orjson.dumps(record) for record in page])
        store_snapshot(store, poll, identity, builder.build(), memory)
    with engine.connect() as conn:
        events = conn.execute(text(
            "SELECT e.kind, e.observed_at, e.occurred_after, e.details::text,"
            "       s.target_portal_group, s.tsih, s.isid, s.initiator_name"
            " FROM iscsi_audit.events e JOIN iscsi_audit.clusters c USING (cluster_id)"
            " LEFT JOIN iscsi_audit.sessions s USING (session_id)"
            " WHERE c.uuid = :u ORDER BY e.event_id"), {"u": identity.uuid}).all()
        counts = conn.execute(text(
            "SELECT p.outcome, p.session_count, p.connection_count"
            " FROM iscsi_audit.polls p JOIN iscsi_audit.clusters c USING (cluster_id)"
            " WHERE c.uuid = :u ORDER BY p.poll_id"), {"u": identity.uuid}).all()
    return [[tuple(e) for e in events], [tuple(c) for c in counts]]


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(walks())
def test_remembering_between_polls_records_the_same_history(
        store: HistoryStore, engine: Engine, sequence: Any) -> None:
    forgetful = replay(store, engine, sequence, None)
    remembering = replay(store, engine, sequence, ClusterMemory())
    assert remembering == forgetful


OLD, NEW = session_record(1, alias="db"), session_record(1, alias="web")


@pytest.mark.parametrize(
    "second_walk",
    [[[OLD], [NEW]], [[NEW], [OLD]], [[OLD, NEW]], [[NEW, OLD], [OLD]]],
    ids=["new-on-a-later-page", "old-on-a-later-page", "new-later-on-the-page", "old-twice"],
)
def test_a_session_seen_twice_in_a_walk_is_taken_from_its_later_sighting(
        store: HistoryStore, engine: Engine, second_walk: list[list[dict[str, Any]]]) -> None:
    sequence = [([[OLD]], OK), (second_walk, OK), ([[OLD]], OK)]
    remembering = replay(store, engine, sequence, ClusterMemory())
    assert remembering == replay(store, engine, sequence, None)
    [_, second, _] = remembering[1]
    assert second == ("ok", 1, 1)  # one session, however often it was seen


def test_an_unchanged_poll_of_a_remembering_collector_reads_nothing_back(
        store: HistoryStore, engine: Engine) -> None:
    identity = ClusterIdentity(str(uuid4()), "quiet", "9.15.1")
    pages = [[orjson.dumps(session_record(n)) for n in range(1, 5)]]
    memory = ClusterMemory()
    statements: list[str] = []
    for minute in range(3):
        moment = T0 + timedelta(minutes=minute)
        builder = SnapshotBuilder(memory.known())
        for page in pages:
            builder.add_page(page)
        snapshot = builder.build()
        if minute == 2:
            from sqlalchemy import event
            event.listen(engine, "before_cursor_execute",
                         lambda conn, cur, sql, *rest: statements.append(sql))
        store_snapshot(store, PollRecord("quiet", moment, moment, OK), identity, snapshot, memory)

    assert snapshot.sessions == {} and len(snapshot.unchanged) == 4  # nothing parsed
    assert not [s for s in statements if "iscsi_audit.sessions" in s]  # nothing read back
    assert memory.sessions == 4
