"""`iscsi-audit tail`: print audit events as they are committed.

It LISTENs on the channel every poll notifies after commit, and on each notification (or
every few seconds, in case one was missed) reads the events after the last one printed.
Notifications only say "look again": several may coalesce into one read, and the read
itself decides what is new, so nothing is printed twice or skipped.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING

import click
import orjson
import psycopg
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from collector.db.feed import EventFeed, FeedEvent, last_event_id, libpq_url
from collector.db.store import NOTIFY_CHANNEL
from collector.diff import EventKind
from collector.output import format_option

if TYPE_CHECKING:
    from collector.cli import Context

# how long to wait for a notification before reading anyway
FALLBACK_SECONDS = 2.0
# the table is for reading on a terminal; the whole of it is in --format json
DETAILS_WIDTH = 100


@dataclass(frozen=True, slots=True)
class EventFilter:
    clusters: frozenset[str] = frozenset()
    kinds: frozenset[str] = frozenset()

    def __call__(self, event: FeedEvent) -> bool:
        return (not self.clusters or event.cluster in self.clusters) and (
            not self.kinds or event.kind in self.kinds
        )


def format_event(event: FeedEvent, fmt: str) -> str:
    """One line: JSON for machines, tab-separated columns for people."""
    if fmt == "json":
        return orjson.dumps(event.as_dict()).decode()
    when = event.observed_at.strftime("%Y-%m-%dT%H:%M:%S%z")
    session = f"isid={event.isid} tsih={event.tsih}" if event.isid is not None else "-"
    columns = (
        str(event.event_id),
        when,
        event.cluster,
        event.kind,
        event.svm or "-",
        event.initiator or "-",
        session,
        _shorten(orjson.dumps(event.details).decode(), DETAILS_WIDTH),
    )
    return "\t".join(columns)


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


class _Stop(Exception):
    """SIGINT or SIGTERM: leave the loop and exit 0."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop


def follow(engine: Engine, since: int | None) -> Iterator[FeedEvent]:
    """Yield committed events from `since` (else from now on), forever, in event_id order."""
    feed = EventFeed(engine)
    with psycopg.connect(libpq_url(engine), autocommit=True) as listener:
        # LISTEN before taking the starting position: a commit in between is still seen
        listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        if since is None:
            with engine.connect() as conn:
                position = last_event_id(conn)
        else:
            position = since - 1
        while True:
            batch = feed.read_after(position)
            yield from batch.events
            position = batch.position
            if not batch.more:
                # any number of notifications (or none, after the timeout) means "read again"
                for _ in listener.notifies(timeout=FALLBACK_SECONDS, stop_after=1):
                    pass


@click.command("tail")
@click.option(
    "--cluster",
    "clusters",
    multiple=True,
    metavar="NAME",
    help="Only events of this cluster (its configured name; repeatable).",
)
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice([k.value for k in EventKind]),
    help="Only events of this kind (repeatable).",
)
@format_option("table", "json", help="Tab-separated columns for people, or JSON lines for piping.")
@click.option(
    "--since",
    type=click.IntRange(min=1),
    metavar="EVENT_ID",
    help="First print the stored events from this event id on, then follow.",
)
@click.pass_obj
def tail_command(
    obj: Context, clusters: Sequence[str], kinds: Sequence[str], fmt: str, since: int | None
) -> None:
    """Print audit events live as polls commit them, until Ctrl-C or SIGTERM."""
    engine = obj.engine(obj.config(required=False))
    wanted = EventFilter(frozenset(clusters), frozenset(kinds))
    # SIGINT too: a shell starts background jobs with it ignored, and `kill -INT` should stop
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _raise_stop)
    try:
        for event in follow(engine, since):
            if wanted(event):
                click.echo(format_event(event, fmt))
    except _Stop:
        return
    except (OperationalError, psycopg.OperationalError) as exc:
        raise click.ClickException(f"database unreachable: {exc}") from None
    finally:
        engine.dispose()
