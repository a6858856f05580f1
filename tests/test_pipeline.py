"""Whole polls into a real PostgreSQL: the named cases of the spine."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import orjson
import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from collector.chain import GENESIS, event_hash
from collector.config import ClusterConfig, PasswordSource
from collector.db import store as store_module
from collector.db.store import HistoryStore, PollRecord
from collector.diff import PollOutcome
from collector.ontap.client import RetryPolicy
from collector.ontap.resources import ClusterIdentity
from collector.pipeline import PollReport, poll_cluster, store_snapshot
from collector.snapshot import SessionKey, SnapshotBuilder
from tests.ontap_pages import CLUSTER_UUID, FakeOntap, connect_error, raw, session_record, status

T0 = datetime(2026, 11, 3, 2, 0, tzinfo=UTC)


class Clock:
    """Each poll reads the clock twice (start, end); polls are a minute apart."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> datetime:
        moment = T0 + timedelta(minutes=self.calls // 2, seconds=self.calls % 2)
        self.calls += 1
        return moment


def minute(n: int) -> datetime:
    return T0 + timedelta(minutes=n)


@pytest.fixture
def cluster(monkeypatch: pytest.MonkeyPatch) -> ClusterConfig:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return ClusterConfig(name="lab", url="https://cluster1.example.com", username="admin",
                         password=PasswordSource("env", "LAB_PASSWORD"))


class Poller:
    """Polls the fake cluster into the store with a deterministic clock and no sleeping."""

    def __init__(self, cluster: ClusterConfig, store: HistoryStore) -> None:
        self.cluster = cluster
        self.store = store
        self.ontap = FakeOntap()
        self.clock = Clock()

    async def poll(self, *records: dict[str, Any], per_page: int = 1000) -> PollReport:
        self.ontap.set_records(list(records), per_page)
        return await self.poll_as_is()

    async def poll_as_is(self) -> PollReport:
        async def no_sleep(seconds: float) -> None:
            return None

        return await poll_cluster(self.cluster, self.store, transport=self.ontap.transport(),
                                  retry=RetryPolicy(retries=2, sleep=no_sleep),
                                  clock=self.clock)


@pytest.fixture
def poller(cluster: ClusterConfig, store: HistoryStore) -> Poller:
    return Poller(cluster, store)


def rows(engine: Engine, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def table_counts(engine: Engine) -> dict[str, int]:
    tables = [t for (t,) in rows(engine, "SELECT tablename FROM pg_tables"
                                         " WHERE schemaname = 'iscsi_audit'")]
    return {t: rows(engine, f"SELECT count(*) FROM iscsi_audit.{t}")[0][0] for t in tables}


async def test_connect_then_disconnect_with_their_windows(poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1))
    await poller.poll(session_record(1))
    await poller.poll()

    assert rows(engine, "SELECT kind, observed_at, occurred_after FROM iscsi_audit.session_events"
                        " ORDER BY event_id") == [
        ("connect", minute(0), None),
        ("disconnect", minute(2), minute(1)),
    ]
    assert rows(engine, "SELECT first_seen_at, last_seen_at, ended_at"
                        " FROM iscsi_audit.session_history") == [(minute(0), minute(1), minute(2))]


async def test_unchanged_poll_writes_its_poll_row_and_nothing_else(poller: Poller,
                                                                   engine: Engine) -> None:
    records = [session_record(n, cids=(1, 2)) for n in range(1, 20)]
    await poller.poll(*records)
    before = table_counts(engine)

    report = await poller.poll(*records)

    after = table_counts(engine)
    assert report.event_kinds == ()
    assert {t: after[t] - before[t] for t in after if after[t] != before[t]} == {"polls": 1}


async def test_open_session_is_last_seen_at_the_clusters_last_ok_poll(poller: Poller,
                                                                      engine: Engine) -> None:
    await poller.poll(session_record(1))
    await poller.poll(session_record(1))
    poller.ontap.cluster_faults = [status(503)] * 3
    await poller.poll_as_is()

    assert rows(engine, "SELECT first_seen_at, last_seen_at, ended_at, is_open"
                        " FROM iscsi_audit.session_history") == [
        (minute(0), minute(1), None, True)]


async def test_tsih_reuse_ends_one_lifetime_and_starts_another(poller: Poller,
                                                               engine: Engine) -> None:
    await poller.poll(session_record(1, tsih=9, initiator="iqn.2000-01.com.a:one"))
    await poller.poll(session_record(2, tsih=9, initiator="iqn.2000-01.com.b:two"))

    assert rows(engine, "SELECT initiator_name, tsih, ended_at FROM iscsi_audit.session_history"
                        " ORDER BY session_id") == [
        ("iqn.2000-01.com.a:one", 9, minute(1)),
        ("iqn.2000-01.com.b:two", 9, None),
    ]


async def test_outage_then_recovery_the_disconnect_window_spans_the_outage(
        poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1))
    poller.ontap.cluster_faults = [connect_error] * 6
    outage = [await poller.poll_as_is(), await poller.poll_as_is()]
    await poller.poll()

    assert [r.outcome for r in outage] == [PollOutcome.FAILED] * 2
    assert rows(engine, "SELECT kind, occurred_after, observed_at FROM iscsi_audit.session_events"
                        " WHERE kind = 'disconnect'") == [("disconnect", minute(0), minute(3))]
    assert rows(engine, "SELECT outcome, error FROM iscsi_audit.poll_log ORDER BY poll_id") == [
        ("ok", None),
        ("failed", "ConnectError: connection refused"),
        ("failed", "ConnectError: connection refused"),
        ("ok", None),
    ]


async def test_page_3_of_5_failing_fails_the_poll_and_closes_nothing(poller: Poller,
                                                                     engine: Engine) -> None:
    records = [session_record(n) for n in range(1, 11)]
    await poller.poll(*records, per_page=2)
    poller.ontap.faults = {3: [status(500)] * 3}

    # host 5 logged out, but the walk breaks on page 3 of 5: nothing may be concluded
    report = await poller.poll(*records[:4], *records[5:], per_page=2)

    assert report.outcome is PollOutcome.FAILED
    assert report.error == "page 3: HTTP 500, ONTAP error 0: server busy"
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.session_history WHERE is_open") == [(10,)]
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.events") == [(10,)]


async def test_a_record_repeated_across_pages_is_one_session(poller: Poller,
                                                             engine: Engine) -> None:
    poller.ontap.pages = [[session_record(1), session_record(2)],
                          [session_record(2), session_record(3)]]

    report = await poller.poll_as_is()

    assert report.outcome is PollOutcome.OK and report.session_count == 3
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.sessions") == [(3,)]


async def test_a_malformed_record_makes_the_poll_partial_and_is_kept_raw(
        poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1), session_record(2))
    bad = session_record(2)
    bad["connections"][0]["initiator_address"]["address"] = "not-an-ip"

    report = await poller.poll(session_record(1), bad, session_record(3))

    assert report.outcome is PollOutcome.PARTIAL
    assert report.event_kinds == ("connect",)  # host 3 opens; host 2 is not closed
    [(page, reason, raw_record)] = rows(engine, "SELECT page, reason, raw"
                                                " FROM iscsi_audit.rejected_records")
    assert (page, raw_record) == (1, bad)
    assert reason == "connections[0].initiator_address.address: 'not-an-ip' is not an IP address"
    assert rows(engine, "SELECT outcome, rejected_count, error FROM iscsi_audit.poll_log"
                        " ORDER BY poll_id DESC LIMIT 1") == [
        ("partial", 1, f"1 record(s) rejected; first on page 1: {reason}")]
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.session_history WHERE is_open") == [(3,)]


async def test_an_empty_ok_snapshot_closes_everything(poller: Poller, engine: Engine) -> None:
    await poller.poll(*(session_record(n, cids=(1, 2), igroups=("a", "b")) for n in range(1, 5)))

    await poller.poll()

    assert rows(engine, "SELECT count(*) FROM iscsi_audit.sessions"
                        " WHERE ended_at IS NULL") == [(0,)]
    assert rows(engine, "SELECT count(*), count(ended_at) FROM iscsi_audit.connections") == [(8, 8)]
    assert rows(engine, "SELECT count(*), count(left_at) FROM iscsi_audit.session_igroups") == [
        (8, 8)]


async def test_ipv6_addresses_are_stored_as_inet(poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1, address="2001:db8:0:0::42", lif_address="fd00::10"))

    assert rows(engine, "SELECT host(initiator_address), host(interface_address), family("
                        "initiator_address) FROM iscsi_audit.connection_history") == [
        ("2001:db8::42", "fd00::10", 6)]


async def test_null_and_missing_optional_fields_are_stored_as_null(poller: Poller,
                                                                   engine: Engine) -> None:
    record = session_record(1, alias=None, igroups=())
    del record["target_portal_group_tag"]
    record["connections"][0]["interface"] = None
    record["connections"][0]["authentication_type"] = None

    await poller.poll(record)

    assert rows(engine, "SELECT initiator_alias, target_portal_group_tag"
                        " FROM iscsi_audit.session_history") == [(None, None)]
    assert rows(engine, "SELECT authentication_type, interface_name"
                        " FROM iscsi_audit.connection_history") == [(None, None)]


async def test_401_is_a_failed_poll_recorded_with_the_message(poller: Poller,
                                                              engine: Engine) -> None:
    poller.ontap.password = "rotated"

    report = await poller.poll()

    assert report.outcome is PollOutcome.FAILED
    assert rows(engine, "SELECT cluster_name, outcome, error, cluster_uuid"
                        " FROM iscsi_audit.poll_log") == [
        ("lab", "failed", "HTTP 401, ONTAP error 6691623: User is not authorized", None)]


async def test_missing_password_is_a_failed_poll_naming_where_it_looked(poller: Poller,
                                                                    engine: Engine,
                                                                    monkeypatch) -> None:
    monkeypatch.delenv("LAB_PASSWORD")

    report = await poller.poll()

    assert report.error == "environment variable LAB_PASSWORD is not set or empty"


async def test_bad_json_page_fails_naming_the_page(poller: Poller) -> None:
    poller.ontap.pages = [[session_record(1)], [session_record(2)]]
    poller.ontap.faults = {2: [raw(b'{"records": [')]}

    report = await poller.poll_as_is()

    assert report.outcome is PollOutcome.FAILED
    assert report.error is not None and report.error.startswith("page 2: not JSON")


async def test_connection_and_igroup_changes_are_recorded(poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1, cids=(1, 2), igroups=("ig-a",)))

    await poller.poll(session_record(1, cids=(2, 3), igroups=("ig-b",), auth="none",
                                     alias="renamed-host"))

    assert rows(engine, "SELECT kind FROM iscsi_audit.session_events WHERE poll_id = 2"
                        " ORDER BY event_id") == [
        ("session_changed",), ("connection_removed",), ("connection_changed",),
        ("connection_added",), ("igroup_joined",), ("igroup_left",)]
    assert rows(engine, "SELECT cid, authentication_type, ended_at IS NULL"
                        " FROM iscsi_audit.connection_history ORDER BY cid, connection_id") == [
        (1, "chap", False), (2, "chap", False), (2, "none", True), (3, "none", True)]
    assert rows(engine, "SELECT initiator_alias FROM iscsi_audit.session_history") == [
        ("renamed-host",)]


async def test_two_collectors_at_once_record_each_event_once(store: HistoryStore,
                                                             engine: Engine) -> None:
    builder = SnapshotBuilder()
    builder.add_page([orjson.dumps(session_record(n)) for n in range(1, 200)])
    snapshot = builder.build()
    identity = ClusterIdentity(CLUSTER_UUID, "cluster1", "9.14.1")
    barrier = threading.Barrier(2)

    def collector(second: int) -> None:
        poll = PollRecord("lab", T0 + timedelta(seconds=second), T0, PollOutcome.OK)
        barrier.wait()
        store_snapshot(store, poll, identity, snapshot)

    await asyncio.gather(asyncio.to_thread(collector, 0), asyncio.to_thread(collector, 1))

    assert rows(engine, "SELECT count(*), count(DISTINCT session_id) FROM iscsi_audit.events") == [
        (199, 199)]
    assert sorted(rows(engine, "SELECT event_count FROM iscsi_audit.polls")) == [(0,), (199,)]


async def test_events_are_append_only(poller: Poller, engine: Engine) -> None:
    await poller.poll(session_record(1))

    for statement in ("UPDATE iscsi_audit.events SET kind = 'x'",
                      "DELETE FROM iscsi_audit.events",
                      "TRUNCATE iscsi_audit.events CASCADE"):
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(text(statement))


async def test_the_hash_chain_recomputes_from_the_stored_rows(poller: Poller,
                                                              engine: Engine) -> None:
    await poller.poll(session_record(1), session_record(2, address="2001:db8::9"))
    await poller.poll(session_record(2, alias="new", cids=(1, 4)))

    prev = GENESIS
    stored = rows(engine, """
        SELECT e.kind, e.observed_at, e.occurred_after, e.details, e.prev_hash, e.hash,
               v.uuid::text, s.target_portal_group, s.tsih, s.isid, s.initiator_name
        FROM iscsi_audit.events e
        LEFT JOIN iscsi_audit.sessions s USING (session_id)
        LEFT JOIN iscsi_audit.svms v USING (svm_id)
        ORDER BY e.event_id""")
    assert len(stored) == 6
    for kind, observed, after, details, prev_hash, digest, svm, tpg, tsih, isid, name in stored:
        key = SessionKey(svm, tpg, tsih, isid, name) if svm else None
        assert bytes(prev_hash) == prev
        prev = event_hash(prev, cluster_uuid=CLUSTER_UUID, kind=kind, observed_at=observed,
                          occurred_after=after, key=key, details=details)
        assert bytes(digest) == prev, (kind, details)


async def test_a_poll_written_in_chunks_is_whole_and_chained(
        poller: Poller, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "BULK_CHUNK", 7)  # 50 sessions: 8 chunks of writes
    records = [session_record(n, cids=(1, 2), igroups=("ig-a",)) for n in range(1, 51)]

    report = await poller.poll(*records, per_page=20)

    assert len(report.event_kinds) == 50
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.connections"
                        " WHERE ended_at IS NULL") == [(100,)]
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.session_igroups"
                        " WHERE left_at IS NULL") == [(50,)]
    chain = rows(engine, "SELECT prev_hash, hash FROM iscsi_audit.events ORDER BY event_id")
    assert bytes(chain[0][0]) == GENESIS
    assert all(bytes(row[0]) == bytes(before[1]) for before, row in pairwise(chain))


@pytest.fixture
def many_records() -> Iterator[list[dict[str, Any]]]:
    yield [session_record(n, cids=(1, 2), igroups=("ig-a", "ig-b")) for n in range(1, 1201)]


async def test_a_large_first_snapshot_and_a_full_logout(poller: Poller, engine: Engine,
                                                        many_records) -> None:
    first = await poller.poll(*many_records, per_page=500)
    last = await poller.poll()

    assert (first.outcome, len(first.event_kinds)) == (PollOutcome.OK, 1200)
    assert len(last.event_kinds) == 1200
    assert rows(engine, "SELECT count(*) FROM iscsi_audit.connections WHERE ended_at IS NULL") == [
        (0,)]


async def test_a_listener_is_notified_of_committed_events(poller: Poller,
                                                          database_url: str) -> None:
    import psycopg

    from collector.db.store import NOTIFY_CHANNEL

    dsn = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(dsn, autocommit=True) as listener:
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        report = await poller.poll(session_record(1), session_record(2))
        await poller.poll(session_record(1), session_record(2))  # nothing new: no NOTIFY
        received = [n.payload for n in listener.notifies(timeout=2, stop_after=2)]

    [payload] = received
    assert orjson.loads(payload) | {"first_event_id": 0, "last_event_id": 0} == {
        "cluster": "lab", "poll_id": report.poll_id, "kinds": {"connect": 2},
        "first_event_id": 0, "last_event_id": 0}
