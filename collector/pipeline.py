"""One poll of one cluster: fetch -> snapshot -> diff -> store.

A poll never raises for what a cluster does (unreachable, 401, bad pages): that is a
`failed` poll, recorded with its error. It raises only when the history itself cannot be
written, which no retry of the cluster would fix.

Cancelling a poll (the collector stopping) abandons its walk, which wrote nothing; once
the write has begun it runs to its commit and the cancel is honoured after, so a stop
never leaves a poll half recorded or unlogged.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Callable, Container, Coroutine, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

import httpx

from collector.config import ClusterConfig, CredentialError
from collector.db.memory import ClusterMemory
from collector.db.store import HistoryStore, PollRecord, PollResult, StaleMemory
from collector.diff import PollOutcome, diff
from collector.ontap.client import OntapClient, OntapError, OntapHTTPError, RetryPolicy
from collector.ontap.resources import ClusterIdentity, Page
from collector.snapshot import Snapshot, SnapshotBuilder

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class PollReport:
    """What one poll did, for the command line and the logs."""

    cluster: str
    poll_id: int
    outcome: PollOutcome
    started_at: datetime
    finished_at: datetime
    session_count: int | None
    rejected_count: int
    event_kinds: tuple[str, ...]
    error: str | None


@dataclass(frozen=True, slots=True)
class Fetched:
    identity: ClusterIdentity
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class FetchFailed:
    identity: ClusterIdentity | None
    error: str
    status: int | None = None  # the HTTP status that ended the walk, if one did


async def poll_cluster(
    cluster: ClusterConfig,
    store: HistoryStore,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    clock: Clock = utcnow,
    memory: ClusterMemory | None = None,
) -> PollReport:
    """Poll once. A collector that polls again passes the same `memory` for this cluster:
    the next poll then parses and reads back only what changed.

    A memory that another collector's write made stale is found so before anything is
    written; the poll then forgets it and starts over, walking and parsing everything.
    """
    try:
        return await _poll(cluster, store, transport, retry, clock, memory)
    except StaleMemory as stale:
        assert memory is not None
        log.info("memory of %s is stale (%s): polling afresh", cluster.name, stale)
        memory.forget()
        return await _poll(cluster, store, transport, retry, clock, memory)


async def _poll(
    cluster: ClusterConfig,
    store: HistoryStore,
    transport: httpx.AsyncBaseTransport | None,
    retry: RetryPolicy | None,
    clock: Clock,
    memory: ClusterMemory | None,
) -> PollReport:
    started_at = clock()
    fetched = await fetch(
        cluster,
        transport=transport,
        retry=retry,
        known=memory.known() if memory is not None else None,
    )
    finished_at = clock()
    if isinstance(fetched, FetchFailed):
        poll = PollRecord(cluster.name, started_at, finished_at, PollOutcome.FAILED, fetched.error)
        write = partial(store.record_failure, poll, fetched.identity)
        return await _whole(_record(poll, write, None))
    snapshot = fetched.snapshot
    outcome = PollOutcome.PARTIAL if snapshot.rejected else PollOutcome.OK
    poll = PollRecord(
        cluster.name,
        started_at,
        finished_at,
        outcome,
        rejected_summary(snapshot) if snapshot.rejected else None,
    )
    write = partial(store_snapshot, store, poll, fetched.identity, snapshot, memory)
    return await _whole(_record(poll, write, snapshot))


async def _record(
    poll: PollRecord, write: Callable[[], PollResult], snapshot: Snapshot | None
) -> PollReport:
    result = await asyncio.to_thread(write)
    return _report(poll, result, snapshot)


async def _whole(write: Coroutine[Any, Any, PollReport]) -> PollReport:
    """Finish a poll's write even when the poll is cancelled meanwhile; then honour the cancel."""
    task = asyncio.ensure_future(write)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("poll not recorded while stopping: %r", error)
        raise


async def fetch(
    cluster: ClusterConfig,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    retry: RetryPolicy | None = None,
    known: Container[bytes] | None = None,
) -> Fetched | FetchFailed:
    """Walk the cluster's sessions into a snapshot; a failure is a value, not an exception.

    Records whose digest is in `known` (what a collector remembers) are not parsed.

    After a 401 the password is read again from its file or command, and the walk is
    tried once more only if it changed: a rotated password is picked up at once, and an
    unchanged wrong one does not count twice against the account's lockout.
    """
    try:
        password = cluster.password.read() if cluster.password else None
    except CredentialError as exc:
        return FetchFailed(None, str(exc))
    fetched = await _walk(cluster, password, transport, retry, known)
    if not isinstance(fetched, FetchFailed) or fetched.status != 401:
        return fetched
    if cluster.password is None or cluster.password.kind == "env":
        return fetched  # nothing to re-read: the environment does not change under us
    try:
        fresh = cluster.password.read()
    except CredentialError as exc:
        return FetchFailed(fetched.identity, f"{fetched.error}; reading it again: {exc}", 401)
    if fresh == password:
        return fetched
    log.info(
        "401 with the old password; %s has a new one, trying again",
        cluster.password.describe(),
        extra={"cluster": cluster.name},
    )
    return await _walk(cluster, fresh, transport, retry, known)


async def _walk(
    cluster: ClusterConfig,
    password: str | None,
    transport: httpx.AsyncBaseTransport | None,
    retry: RetryPolicy | None,
    known: Container[bytes] | None,
) -> Fetched | FetchFailed:
    identity: ClusterIdentity | None = None
    try:
        async with OntapClient(cluster, password, transport=transport, retry=retry) as client:
            identity = await client.cluster_identity()
            builder = SnapshotBuilder(known)
            await _digest_pages(client.session_pages(), builder)
    except OntapHTTPError as exc:
        return FetchFailed(identity, str(exc), exc.status)
    except OntapError as exc:
        return FetchFailed(identity, str(exc))
    except OSError as exc:  # unreadable CA bundle or client certificate
        return FetchFailed(identity, f"TLS setup: {exc}")
    return Fetched(identity, builder.build())


async def _digest_pages(pages: AsyncGenerator[Page, None], builder: SnapshotBuilder) -> None:
    """Add each page to the snapshot while the next one is on its way.

    The digesting runs in a worker thread so that the event loop sends the next request
    meanwhile: the cluster prepares page n+1 while this process digests page n.
    """
    upcoming = asyncio.ensure_future(_next_page(pages))
    try:
        while (page := await upcoming) is not None:
            upcoming = asyncio.ensure_future(_next_page(pages))
            if page.next_href is None:  # the last (often only) page: nothing to overlap
                builder.add_page(page.records)
            else:
                await asyncio.to_thread(builder.add_page, page.records)
    finally:
        if not upcoming.done():  # the walk failed or was cancelled: stop fetching
            upcoming.cancel()
            await asyncio.wait({upcoming})
        await pages.aclose()


async def _next_page(pages: AsyncGenerator[Page, None]) -> Page | None:
    return await anext(pages, None)


def store_snapshot(
    store: HistoryStore,
    poll: PollRecord,
    identity: ClusterIdentity,
    snapshot: Snapshot,
    memory: ClusterMemory | None = None,
) -> PollResult:
    with store.cluster_transaction(poll.cluster_label, identity, poll.started_at, memory) as tx:
        previous, compared = tx.open_state(snapshot)
        changes = diff(previous, compared, poll.outcome, poll.started_at)
        return tx.record(poll, changes, snapshot)


def rejected_summary(snapshot: Snapshot) -> str:
    first = snapshot.rejected[0]
    more = len(snapshot.rejected) - 1
    text = (
        f"{len(snapshot.rejected)} record(s) rejected; first on page {first.page}: {first.reason}"
    )
    return text if more == 0 else f"{text} (see rejected_records)"


def _report(poll: PollRecord, result: PollResult, snapshot: Snapshot | None) -> PollReport:
    report = PollReport(
        cluster=poll.cluster_label,
        poll_id=result.poll_id,
        outcome=poll.outcome,
        started_at=poll.started_at,
        finished_at=poll.finished_at,
        session_count=result.session_count,
        rejected_count=len(snapshot.rejected) if snapshot is not None else 0,
        event_kinds=result.event_kinds,
        error=poll.error,
    )
    _log(report)
    return report


def _log(report: PollReport) -> None:
    seconds = (report.finished_at - report.started_at).total_seconds()
    fields = {"cluster": report.cluster, "poll_id": report.poll_id, "outcome": report.outcome.value}
    if report.outcome is PollOutcome.FAILED:
        log.warning("poll failed after %.2fs: %s", seconds, report.error, extra=fields)
        return
    level = logging.INFO if report.outcome is PollOutcome.OK else logging.WARNING
    log.log(
        level,
        "poll %s: %d sessions, %d events (%s) in %.2fs%s",
        report.outcome.value,
        report.session_count or 0,
        len(report.event_kinds),
        event_summary(report.event_kinds),
        seconds,
        f"; {report.error}" if report.error else "",
        extra=fields,
    )


def event_summary(kinds: Iterable[str]) -> str:
    counts: dict[str, int] = {}
    for kind in kinds:
        counts[kind] = counts.get(kind, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "none"
