"""`iscsi-audit demo`: the whole product on one machine, with nothing to set up.

Starts the bundled ONTAP simulator on loopback with churn, uses the embedded PostgreSQL
unless a database is configured, creates the schema, and polls every few seconds with a
live view of polls and connect/disconnect events. It then says what to try next.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine, text

from collector.config import ClusterConfig, PasswordSource
from collector.db.store import HistoryStore
from collector.pipeline import PollReport, event_summary, poll_cluster
from collector.simulator.app import DEFAULT_USERNAME, create_app
from collector.simulator.server import SimulatorServer
from collector.simulator.world import World

PASSWORD_ENV = "ISCSI_AUDIT_DEMO_PASSWORD"
_SHOWN_KINDS = ("connect", "disconnect")


@dataclass
class DemoView:
    """What the live view shows: the last poll of each cluster and the latest events."""

    polls: dict[str, PollReport] = field(default_factory=dict)
    events: deque[tuple[object, ...]] = field(default_factory=lambda: deque(maxlen=12))
    totals: dict[str, int] = field(default_factory=dict)
    last_event_id: int = 0

    def render(self) -> Group:
        polls = Table(title="polls", expand=True)
        for column in ("cluster", "outcome", "sessions", "events", "seconds"):
            polls.add_column(column)
        for report in self.polls.values():
            seconds = (report.finished_at - report.started_at).total_seconds()
            polls.add_row(report.cluster, report.outcome.value, str(report.session_count or 0),
                          event_summary(report.event_kinds), f"{seconds:.2f}")
        events = Table(title="latest connect / disconnect events", expand=True)
        for column in ("event", "observed", "cluster", "kind", "initiator", "from", "auth"):
            events.add_column(column)
        for row in self.events:
            events.add_row(*(str(v) if v is not None else "" for v in row))
        summary = ", ".join(f"{n} {k}" for k, n in sorted(self.totals.items())) or "none yet"
        return Group(polls, events, f"events recorded: {summary}")


def demo_clusters(server: SimulatorServer, count: int) -> list[ClusterConfig]:
    return [ClusterConfig(name=f"demo-{i + 1}", url=server.base_url(i), insecure_http=True,
                          username=DEFAULT_USERNAME, password=PasswordSource("env", PASSWORD_ENV),
                          max_records=200)
            for i in range(count)]


EventRow = tuple[object, ...]


def read_new_events(engine: Engine, view: DemoView) -> list[EventRow]:
    """Events committed since the last call; counts them and keeps connects/disconnects."""
    with engine.connect() as conn:
        rows = conn.execute(text("""
            SELECT e.event_id, to_char(e.observed_at, 'HH24:MI:SS'), e.cluster_name, e.kind,
                   e.initiator_name,
                   e.details->'connections'->0->>'initiator_address',
                   e.details->'connections'->0->>'authentication_type'
            FROM iscsi_audit.session_events e
            WHERE e.event_id > :after ORDER BY e.event_id"""), {"after": view.last_event_id})
        shown = []
        for row in rows:
            view.last_event_id = row[0]
            view.totals[row[3]] = view.totals.get(row[3], 0) + 1
            if row[3] in _SHOWN_KINDS:
                shown.append(tuple(row))
    view.events.extend(shown)
    return shown


def _last_event_id(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT coalesce(max(event_id), 0) FROM iscsi_audit.events")))


async def poll_loop(clusters: Sequence[ClusterConfig], store: HistoryStore, view: DemoView,
                    interval: float, deadline: float | None, stop: asyncio.Event,
                    on_poll: Callable[[list[EventRow]], None]) -> None:
    """Poll every cluster each `interval` seconds until `stop` or the deadline."""
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        started = time.monotonic()
        for report in await asyncio.gather(*(poll_cluster(c, store) for c in clusters)):
            view.polls[report.cluster] = report
        on_poll(await asyncio.to_thread(read_new_events, store.engine, view))
        pause = interval - (time.monotonic() - started)
        if deadline is not None:
            pause = min(pause, deadline - time.monotonic())
        if pause > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), pause)


def next_steps(source: str) -> str:
    return f"""
What to try next
  The history is in PostgreSQL ({source}); ask it with SQL:
    iscsi-audit query "SELECT kind, observed_at, initiator_name
                       FROM iscsi_audit.session_events ORDER BY event_id DESC LIMIT 10"
    iscsi-audit query "SELECT cluster_name, outcome, session_count, error FROM iscsi_audit.poll_log"
  The views: session_events, session_history, connection_history, poll_log (docs/schema.md).
  Against your own clusters: write iscsi-audit.toml (README: Configuration), then
    iscsi-audit collect --once
"""


def run_demo(engine: Engine, database_source: str, *, clusters: int, sessions: int,
             churn: float, interval: float, duration: float | None, seed: int,
             console: Console) -> DemoView:
    """Serve a simulated fleet on loopback and poll it until Ctrl-C or `duration`."""
    password = secrets.token_urlsafe(16)
    os.environ[PASSWORD_ENV] = password  # the collector reads it like any password_env
    world = World.generate(clusters=clusters, sessions=sessions, seed=seed,
                           churn_per_minute=churn)
    app = create_app(world, password=password, base_port=0, clock=time.monotonic)
    server = SimulatorServer(app, host="127.0.0.1", port=0)
    server.start()
    view = DemoView(last_event_id=_last_event_id(engine))  # show only this run's events
    configs = demo_clusters(server, clusters)
    console.print(f"simulator: {clusters} ONTAP cluster(s), {sessions} sessions each,"
                  f" {churn:g} logins/min, at " + ", ".join(c.url for c in configs),
                  soft_wrap=True, highlight=False)
    try:
        asyncio.run(_run(configs, HistoryStore(engine), view, interval, duration, console))
    finally:
        server.stop()
    console.print(view.render())
    console.print(next_steps(database_source), soft_wrap=True, highlight=False)
    return view


async def _run(configs: Sequence[ClusterConfig], store: HistoryStore, view: DemoView,
               interval: float, duration: float | None, console: Console) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    deadline = time.monotonic() + duration if duration else None
    if not console.is_terminal:  # piped or captured: plain lines, one per event

        def print_lines(rows: list[EventRow]) -> None:
            for row in rows:
                console.print(_event_line(row), highlight=False, soft_wrap=True)

        await poll_loop(configs, store, view, interval, deadline, stop, print_lines)
        return
    with Live(view.render(), console=console, refresh_per_second=4) as live:
        await poll_loop(configs, store, view, interval, deadline, stop,
                        lambda rows: live.update(view.render()))


def _event_line(row: EventRow) -> str:
    _, observed, cluster, kind, initiator, address, auth = row
    line = f"{observed} {cluster} {kind:<10} {initiator}"
    return f"{line} from {address} auth={auth}" if kind == "connect" else line
