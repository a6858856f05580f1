"""`iscsi-audit tail` and the feed under it: events in commit-safe event_id order, live."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from sqlalchemy import Engine, text

from collector.config import CONFIG_ENV, DATABASE_URL_ENV
from collector.db.feed import CommitFrontier, EventFeed
from collector.tail import EventFilter, format_event
from tests.event_source import EventSource

ISCSI_AUDIT = Path(sys.executable).parent / "iscsi-audit"


@pytest.fixture
def source(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> EventSource:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return EventSource(engine)


# --- the frontier (pure) ------------------------------------------------------------------


def test_consecutive_ids_are_read_even_while_writers_are_in_flight() -> None:
    frontier = CommitFrontier()
    frontier.observe(allocated=9, writers=frozenset({"3/7"}))

    assert frontier.safe_prefix(0, [1, 2, 3, 5]) == 3


def test_a_gap_is_not_crossed_while_a_writer_that_may_own_it_is_in_flight() -> None:
    frontier = CommitFrontier()
    frontier.observe(allocated=5, writers=frozenset({"3/7"}))
    frontier.observe(allocated=6, writers=frozenset({"3/7", "4/2"}))

    assert frontier.safe_prefix(2, [4, 5, 6]) == 0


def test_a_gap_is_final_once_the_writers_in_flight_then_have_ended() -> None:
    frontier = CommitFrontier()
    frontier.observe(allocated=5, writers=frozenset({"3/7"}))
    # a newer writer is busy, but it drew its ids after 5
    frontier.observe(allocated=8, writers=frozenset({"4/2"}))

    assert frontier.safe_prefix(2, [4, 5, 7]) == 2


def test_with_no_writer_in_flight_every_allocated_id_is_final() -> None:
    frontier = CommitFrontier()
    frontier.observe(allocated=8, writers=frozenset())

    assert frontier.safe_prefix(0, [3, 8]) == 2


# --- the feed against PostgreSQL ---------------------------------------------------------


async def test_feed_reads_every_event_once_in_order(source: EventSource, engine: Engine) -> None:
    await source.poll(login=range(1, 6))
    await source.poll(logout=(2, 3), login=(6,))
    feed = EventFeed(engine)

    first = feed.read_after(0, limit=4)
    rest = feed.read_after(first.position, limit=100)

    ids = [e.event_id for e in first.events + rest.events]
    assert [e.kind for e in first.events + rest.events] == ["connect"] * 5 + [
        "disconnect", "disconnect", "connect"]
    assert ids == sorted(set(ids))
    assert first.more and not rest.more


async def test_feed_waits_for_an_event_that_commits_after_a_higher_id(
    source: EventSource, engine: Engine
) -> None:
    await source.poll(login=(1,))
    feed = EventFeed(engine)
    assert [e.event_id for e in feed.read_after(0).events] == [1]

    # a slow writer draws id 2 and is still in its transaction when another poll commits 3
    with engine.connect() as slow:
        slow.execute(text(
            "INSERT INTO iscsi_audit.events (cluster_id, poll_id, kind, observed_at,"
            " occurred_after, session_id, details, prev_hash, hash)"
            " SELECT cluster_id, poll_id, 'session_changed', observed_at, occurred_after,"
            " session_id, '{}', 'slow-prev', 'slow-hash' FROM iscsi_audit.events"))
        await source.poll(login=(2,))

        assert feed.read_after(1).events == []
        slow.commit()

    assert [(e.event_id, e.kind) for e in feed.read_after(1).events] == [
        (2, "session_changed"), (3, "connect")]


async def test_feed_crosses_a_gap_once_its_writer_rolled_back(
    source: EventSource, engine: Engine
) -> None:
    with engine.connect() as slow:
        slow.execute(text("LOCK TABLE iscsi_audit.events IN ROW EXCLUSIVE MODE"))
        slow.execute(text("SELECT nextval(pg_get_serial_sequence('iscsi_audit.events',"
                          " 'event_id'))"))
        await source.poll(login=(1, 2))
        feed = EventFeed(engine)

        assert feed.read_after(0).events == []
        slow.rollback()

    assert [e.event_id for e in feed.read_after(0).events] == [2, 3]


# --- formatting ---------------------------------------------------------------------------


async def test_table_and_json_lines_carry_the_event(source: EventSource, engine: Engine) -> None:
    await source.poll(login=(1,))
    [event] = EventFeed(engine).read_after(0).events

    columns = format_event(event, "table").split("\t")
    record = orjson.loads(format_event(event, "json"))

    assert columns[0] == "1" and columns[2:6] == [
        "lab", "connect", "svm1", "iqn.1994-05.com.redhat:host1"]
    assert record["event_id"] == 1 and record["kind"] == "connect"
    assert record["initiator"] == "iqn.1994-05.com.redhat:host1"
    assert record["observed_at"] == event.observed_at.isoformat()


async def test_filter_by_cluster_and_kind(source: EventSource, engine: Engine) -> None:
    await source.poll(login=(1, 2))
    await source.poll(logout=(1,))
    events = EventFeed(engine).read_after(0).events

    assert [e.kind for e in events if EventFilter(kinds=frozenset({"disconnect"}))(e)] == [
        "disconnect"]
    assert [e for e in events if EventFilter(clusters=frozenset({"other"}))(e)] == []


# --- the command, live ---------------------------------------------------------------------


@pytest.fixture
def tail_process(database_url: str, tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    env = {k: v for k, v in os.environ.items() if k != CONFIG_ENV}
    env[DATABASE_URL_ENV] = database_url
    with subprocess.Popen(
        [str(ISCSI_AUDIT), "tail", "--format", "json", "--since", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    ) as process:
        yield process
        if process.poll() is None:
            process.kill()


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _take(lines: queue.Queue[str], count: int) -> list[dict[str, object]]:
    return [orjson.loads(lines.get(timeout=10)) for _ in range(count)]


async def test_tail_prints_events_as_they_are_committed_and_exits_0_on_sigterm(
    source: EventSource, tail_process: subprocess.Popen[str]
) -> None:
    await source.poll(login=(1, 2))  # before tail is listening: replayed by --since 1
    lines = _lines(tail_process.stdout)
    replayed = _take(lines, 2)

    await source.poll(login=(3,))
    live = _take(lines, 1)
    await source.poll(logout=(1,))
    await source.poll(logout=(2,))
    later = _take(lines, 2)
    tail_process.send_signal(signal.SIGTERM)

    assert tail_process.wait(timeout=10) == 0
    events = replayed + live + later
    assert [e["event_id"] for e in events] == [1, 2, 3, 4, 5]
    assert [(e["kind"], e["initiator"]) for e in events] == [
        ("connect", "iqn.1994-05.com.redhat:host1"),
        ("connect", "iqn.1994-05.com.redhat:host2"),
        ("connect", "iqn.1994-05.com.redhat:host3"),
        ("disconnect", "iqn.1994-05.com.redhat:host1"),
        ("disconnect", "iqn.1994-05.com.redhat:host2"),
    ]
    assert lines.empty()
