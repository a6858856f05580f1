"""Reading committed events in event_id order, without skipping one that commits late.

`tail` and the sinks read `iscsi_audit.session_events` by `event_id > position`. That alone
is not safe: event ids are drawn from a sequence when a poll inserts them, but polls of
different clusters commit in any order. Cluster A may draw ids 10-12 and still be writing
while cluster B draws 13 and commits; a reader that saw 13 and moved past 12 would never
see A's events. Gaps are also normal and permanent (a poll that rolled back).

So a reader decides which gaps are final with `CommitFrontier`:

- a visible id right after the position is always safe (it is committed);
- an id across a gap is safe only once every id up to it is final: the transactions that
  could still hold a lower id have ended. An INSERT takes its ROW EXCLUSIVE lock on the
  events table before it draws an id and keeps it until commit, so "the sequence stood at
  N, and afterwards no transaction that held that lock then still holds it" proves every
  id <= N is committed or never will be.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.engine import make_url

from collector.db.comments import SCHEMA

DEFAULT_BATCH = 500

_ALLOCATED = text(
    f"SELECT coalesce(pg_sequence_last_value("
    f"pg_get_serial_sequence('{SCHEMA}.events', 'event_id')::regclass), 0)"
)
# Writers in flight: transactions other than ours holding the insert lock on events.
_WRITERS = text(
    "SELECT virtualtransaction FROM pg_locks"
    f" WHERE locktype = 'relation' AND relation = '{SCHEMA}.events'::regclass"
    " AND mode = 'RowExclusiveLock' AND granted AND pid <> pg_backend_pid()"
)
_EVENTS_AFTER = text(
    "SELECT event_id, cluster_name, cluster_uuid, kind, observed_at, occurred_after,"
    " svm_name, initiator_name, isid, tsih, target_portal_group, session_id, poll_id,"
    f" details FROM {SCHEMA}.session_events"
    " WHERE event_id > :position ORDER BY event_id LIMIT :limit"
)
_LAST_EVENT = text(f"SELECT coalesce(max(event_id), 0) FROM {SCHEMA}.events")


@dataclass(frozen=True, slots=True)
class FeedEvent:
    """One audit event as forwarded: the columns of `session_events`."""

    event_id: int
    cluster: str
    cluster_uuid: uuid.UUID
    kind: str
    observed_at: datetime
    occurred_after: datetime | None
    svm: str | None
    initiator: str | None
    isid: str | None
    tsih: int | None
    target_portal_group: str | None
    session_id: int | None
    poll_id: int
    details: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready mapping (the one shape every output uses)."""
        return {
            "event_id": self.event_id,
            "cluster": self.cluster,
            "cluster_uuid": str(self.cluster_uuid),
            "kind": self.kind,
            "observed_at": self.observed_at.isoformat(),
            "occurred_after": self.occurred_after.isoformat() if self.occurred_after else None,
            "svm": self.svm,
            "initiator": self.initiator,
            "isid": self.isid,
            "tsih": self.tsih,
            "target_portal_group": self.target_portal_group,
            "session_id": self.session_id,
            "poll_id": self.poll_id,
            "details": self.details,
        }


class CommitFrontier:
    """Tracks up to which event id every id is final (committed, or never will be)."""

    def __init__(self, final_upto: int = 0) -> None:
        self.final_upto = final_upto
        # (sequence value, the writers in flight when it was read): final once they end
        self._pending: tuple[int, frozenset[str]] | None = None

    def observe(self, allocated: int, writers: frozenset[str]) -> None:
        """Record the sequence's value and then the writers in flight, read in that order."""
        if self._pending is not None and not (self._pending[1] & writers):
            self.final_upto = max(self.final_upto, self._pending[0])
            self._pending = None
        if not writers:
            self.final_upto = max(self.final_upto, allocated)
            self._pending = None
        elif self._pending is None:
            self._pending = (allocated, writers)

    def safe_prefix(self, position: int, event_ids: Sequence[int]) -> int:
        """How many of `event_ids` (ascending, all > position) can be read without a gap."""
        count = 0
        previous = position
        for event_id in event_ids:
            if event_id != previous + 1 and event_id > self.final_upto:
                break
            previous = event_id
            count += 1
        return count


@dataclass(frozen=True, slots=True)
class Batch:
    events: list[FeedEvent]
    position: int  # the last event id read; the next read starts after it
    more: bool  # a full batch: read again before waiting


class EventFeed:
    """Reads committed events after a position, in event_id order, in batches."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.frontier = CommitFrontier()

    def read_after(self, position: int, limit: int = DEFAULT_BATCH) -> Batch:
        with self.engine.connect() as conn:
            # order matters: the sequence first, then the locks, then the rows (each
            # statement sees what committed before it began)
            allocated = int(conn.scalar(_ALLOCATED) or 0)
            writers = frozenset(str(w) for w in conn.scalars(_WRITERS))
            self.frontier.observe(allocated, writers)
            rows = conn.execute(_EVENTS_AFTER, {"position": position, "limit": limit}).all()
        keep = self.frontier.safe_prefix(position, [row.event_id for row in rows])
        events = [_event(row._mapping) for row in rows[:keep]]
        position = events[-1].event_id if events else position
        return Batch(events, position, more=keep == len(rows) == limit)


def last_event_id(conn: Connection) -> int:
    return int(conn.scalar(_LAST_EVENT) or 0)


def libpq_url(engine: Engine) -> str:
    """The engine's URL as psycopg.connect() takes it (for a LISTEN connection)."""
    url = make_url(engine.url).set(drivername="postgresql")
    return url.render_as_string(hide_password=False)


def _event(row: Any) -> FeedEvent:
    return FeedEvent(
        event_id=row["event_id"],
        cluster=row["cluster_name"],
        cluster_uuid=row["cluster_uuid"],
        kind=row["kind"],
        observed_at=row["observed_at"],
        occurred_after=row["occurred_after"],
        svm=row["svm_name"],
        initiator=row["initiator_name"],
        isid=row["isid"],
        tsih=row["tsih"],
        target_portal_group=row["target_portal_group"],
        session_id=row["session_id"],
        poll_id=row["poll_id"],
        details=row["details"],
    )
