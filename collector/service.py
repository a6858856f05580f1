"""`iscsi-audit run`: the collector daemon.

Polls every configured cluster on its own interval (collector.scheduler) until a signal:

    SIGTERM, SIGINT  stop: no new polls; walks in flight are abandoned (they wrote nothing)
                     and a poll already writing commits whole; then exit 0
    SIGHUP           reload the configuration file: clusters added, removed or changed
                     without a restart; a file that does not validate is refused, the
                     reason logged, and the running configuration kept

The configured `[[sinks]]` forward committed events (collector.sinks) from the same
process; a reload that changes them restarts the sinks, each resuming from its stored
position. With `--metrics-port`, `/metrics` and `/healthz` are served (collector.health).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

import click
from sqlalchemy import Engine, select

from collector.config import ClusterConfig, Config
from collector.db import models as m
from collector.db.store import HistoryStore
from collector.fleet_memory import FleetMemory
from collector.health import OperationsServer
from collector.metrics import CollectorMetrics
from collector.pipeline import PollReport, poll_cluster
from collector.scheduler import ClusterChanges, PollScheduler
from collector.sinks import run_sinks

if TYPE_CHECKING:
    from collector.cli import Context

log = logging.getLogger(__name__)

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@click.command("run")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve /metrics and /healthz on this TCP port (0: any free port) [default: off].",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="Address to serve them on; 0.0.0.0 (or ::) for every interface.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    help="Polls in flight at once, over all clusters [default: [collector] concurrency, or 8].",
)
@click.pass_obj
def run_command(
    obj: Context, metrics_port: int | None, metrics_host: str, concurrency: int | None
) -> None:
    """Poll every configured cluster on its interval until stopped.

    SIGTERM or SIGINT stops cleanly (exit 0); SIGHUP reloads the configuration file.
    """
    from collector.cli import ConfigProblem  # here: cli imports this module

    # APScheduler logs every run at INFO; ours say what matters, and its warnings stay
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    config = obj.config()
    if not config.clusters:
        raise ConfigProblem(f"{obj.config_path}: clusters: none configured")
    engine = obj.engine(config)
    metrics = CollectorMetrics()
    server = _start_endpoint(metrics, engine, metrics_host, metrics_port)
    try:
        asyncio.run(Collector(obj, config, engine, metrics, concurrency).run())
    finally:
        if server is not None:
            server.stop()
        engine.dispose()


def _start_endpoint(
    metrics: CollectorMetrics, engine: Engine, host: str, port: int | None
) -> OperationsServer | None:
    if port is None:
        return None
    try:
        server = OperationsServer(metrics.registry, engine, host=host, port=port)
    except OSError as exc:
        raise click.ClickException(
            f"--metrics-port: cannot listen on {host}:{port}: {exc.strerror}"
        ) from None
    server.start()
    log.info("serving %s/metrics and %s/healthz", server.url, server.url)
    return server


class Collector:
    """The running daemon: a scheduler, the signals that steer it, and its configuration."""

    def __init__(
        self,
        context: Context,
        config: Config,
        engine: Engine,
        metrics: CollectorMetrics,
        concurrency: int | None,
    ) -> None:
        self._context = context
        self._config = config
        self._engine = engine
        self._metrics = metrics
        self._concurrency_option = concurrency
        self._store = HistoryStore(engine)
        self._sinks: _Sinks | None = None
        # per cluster, the digests of its open sessions' records: the next poll parses and
        # reads back only what changed (500 sessions at 1% churn: 41 ms of CPU without, 8 with)
        self._memory = FleetMemory(config.collector.remember_sessions)

    async def run(self) -> None:
        signals: asyncio.Queue[signal.Signals] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        for sig in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.add_signal_handler(sig, signals.put_nowait, sig)
        concurrency = self._concurrency_option or self._config.collector.concurrency
        scheduler = PollScheduler(
            self._poll,
            self._metrics,
            concurrency=concurrency,
            max_backoff=self._config.collector.max_backoff,
        )
        await self._apply(scheduler, self._config)
        scheduler.start()
        self._start_sinks(self._config)
        log.info(
            "collector running: %d cluster(s) (%s), at most %d polls at a time",
            len(self._config.clusters),
            ", ".join(c.name for c in self._config.clusters),
            concurrency,
        )
        while (sig := await signals.get()) == signal.SIGHUP:
            await self._reload(scheduler)
        log.info("%s: stopping; polls already writing will commit", sig.name)
        await scheduler.stop()
        # after the polls: events their last writes committed may still go out
        await self._stop_sinks()
        for handled in (*_STOP_SIGNALS, signal.SIGHUP):
            loop.remove_signal_handler(handled)
        log.info("collector stopped")

    async def _poll(self, cluster: ClusterConfig) -> PollReport:
        try:
            with self._memory.borrowed(cluster.name) as memory:
                return await poll_cluster(cluster, self._store, memory=memory)
        finally:
            self._metrics.remembered_sessions.set(self._memory.remembered)

    async def _reload(self, scheduler: PollScheduler) -> None:
        try:
            # the same loading and warnings as at start; ClickException carries the reason
            config = self._context.config()
        except click.ClickException as exc:
            self._refuse(exc.message)
            return
        if not config.clusters:
            self._refuse(f"{self._context.config_path}: clusters: none configured")
            return
        self._restart_notes(config)
        changes = await self._apply(scheduler, config)
        if config.sinks != self._config.sinks:
            await self._stop_sinks()
            self._start_sinks(config)
            log.info("sinks restarted with the new configuration (%d)", len(config.sinks))
        self._config = config
        self._memory.keep_only({c.name for c in config.clusters})
        self._memory.budget = config.collector.remember_sessions
        self._metrics.reloads.labels("applied").inc()
        log.info("configuration reloaded: %s", changes.summary())

    async def _apply(self, scheduler: PollScheduler, config: Config) -> ClusterChanges:
        new = [c.name for c in config.clusters if c.name not in scheduler.clusters]
        last_ok = await asyncio.to_thread(last_ok_polls, self._engine, new) if new else {}
        return scheduler.apply(config.clusters, config.collector.max_backoff, last_ok)

    def _start_sinks(self, config: Config) -> None:
        if not config.sinks:
            return
        stop = asyncio.Event()
        task = asyncio.create_task(run_sinks(self._engine, config.sinks, stop), name="sinks")
        task.add_done_callback(_log_sinks_end)
        self._sinks = _Sinks(task, stop)

    async def _stop_sinks(self) -> None:
        if self._sinks is None:
            return
        self._sinks.stop.set()
        await asyncio.gather(self._sinks.task, return_exceptions=True)
        self._sinks = None

    def _refuse(self, reason: str) -> None:
        self._metrics.reloads.labels("refused").inc()
        log.error("configuration refused, the previous one keeps running: %s", reason)

    def _restart_notes(self, new: Config) -> None:
        """Say which changes a reload cannot apply (the database, the concurrency limit)."""
        old = self._config
        if new.database_url != old.database_url:
            log.warning("database.url changed: it takes effect at the next restart")
        if self._concurrency_option is None and (
            new.collector.concurrency != old.collector.concurrency
        ):
            log.warning("collector.concurrency changed: it takes effect at the next restart")


@dataclass(frozen=True, slots=True)
class _Sinks:
    task: asyncio.Task[None]
    stop: asyncio.Event


def _log_sinks_end(task: asyncio.Task[None]) -> None:
    # the sinks handle their receivers' failures; anything reaching here is a bug, and the
    # collector keeps recording rather than die with it (events wait in the table)
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error(
            "event sinks stopped: %r; events are kept and sent after a restart", exc, exc_info=exc
        )


def last_ok_polls(engine: Engine, labels: Sequence[str]) -> dict[str, datetime]:
    """When each cluster's last ok poll started, from the history (survives restarts)."""
    found: dict[str, datetime] = {}
    with engine.connect() as conn:
        for label in labels:
            # per label, so each is one backward step on the (cluster_label, started_at) index
            started = conn.scalar(
                select(m.Poll.started_at)
                .where(m.Poll.cluster_label == label, m.Poll.outcome == "ok")
                .order_by(m.Poll.started_at.desc())
                .limit(1)
            )
            if started is not None:
                found[label] = started
    return found
