"""The `iscsi-audit` command: thin commands over the library.

Exit codes: 0 success; 1 a poll was not ok, or the database failed; 2 usage or
configuration errors (with the file, the key and the problem, and nothing written).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import click
import orjson
from rich.console import Console
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError

from collector import __version__
from collector.config import (
    CONFIG_ENV,
    DATABASE_URL_ENV,
    ClusterConfig,
    Config,
    ConfigError,
    config_path,
    load_config,
)
from collector.db.database import (
    DatabaseError,
    ensure_schema,
    make_engine,
    migrate,
    resolve_database,
)
from collector.db.queries import read_only_query, render_rows
from collector.db.store import HistoryStore
from collector.diff import PollOutcome
from collector.logs import setup_logging
from collector.output import format_option
from collector.pipeline import PollReport, event_summary, poll_cluster
from collector.service import run_command
from collector.simulator.command import simulator_command
from collector.sinks.command import sinks_command
from collector.tail import tail_command

log = logging.getLogger("collector")

T = TypeVar("T")

EXIT_NOT_OK = 1
EXIT_USAGE = 2


class ConfigProblem(click.ClickException):
    exit_code = EXIT_USAGE


@dataclass
class Context:
    config_path: Path
    explicit_config: bool
    database_source: str = ""

    def config(self, *, required: bool = True) -> Config:
        """Load the config; `required=False` lets a missing default file read as empty.

        A file named by --config or $ISCSI_AUDIT_CONFIG must always exist: a typo in its
        path must not quietly become "no configuration".
        """
        try:
            config = load_config(self.config_path, required=required or self.explicit_config)
        except ConfigError as exc:
            raise ConfigProblem(str(exc)) from None
        for cluster in config.clusters:
            if not cluster.verify:
                log.warning(
                    "TLS verification is OFF for cluster %s (verify = false): its"
                    " answers and credentials are open to interception",
                    cluster.name,
                    extra={"cluster": cluster.name},
                )
            if cluster.url.startswith("http://"):
                log.warning(
                    "cluster %s is reached over plain http (insecure_http = true): its"
                    " credentials cross the network in clear",
                    cluster.name,
                    extra={"cluster": cluster.name},
                )
        return config

    def engine(self, config: Config, *, create_schema: bool = True) -> Engine:
        try:
            target = resolve_database(config)
        except (DatabaseError, ArgumentError) as exc:
            where = (
                f"${DATABASE_URL_ENV}"
                if os.environ.get(DATABASE_URL_ENV)
                else f"{self.config_path}: database.url"
            )
            raise ConfigProblem(f"{where}: {exc}") from None
        log.info(
            "database: %s (%s)",
            make_url(target.url).render_as_string(hide_password=True),
            target.source,
        )
        engine = make_engine(target.url)
        self.database_source = target.source
        if create_schema:
            _database_step(lambda: ensure_schema(engine))
        return engine


def _database_step(step: Callable[[], T]) -> T:
    try:
        return step()
    except DatabaseError as exc:
        raise click.ClickException(str(exc)) from None
    except OperationalError as exc:
        raise click.ClickException(f"database unreachable: {exc.orig}") from None


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="iscsi-audit")
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    help="Configuration file [default: $ISCSI_AUDIT_CONFIG, else ./iscsi-audit.toml].",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="info",
    show_default=True,
    help="Least severe log level to print.",
)
@click.option(
    "--log-format",
    type=click.Choice(["console", "json"]),
    default="console",
    show_default=True,
    help="Log lines for people (console) or machines (json).",
)
@click.pass_context
def cli(ctx: click.Context, config_file: str | None, log_level: str, log_format: str) -> None:
    """Audit trail of iSCSI logins on NetApp ONTAP clusters, kept in PostgreSQL."""
    setup_logging(log_level, log_format)
    ctx.obj = Context(
        config_path(config_file), explicit_config=bool(config_file or os.environ.get(CONFIG_ENV))
    )


@cli.command("migrate")
@click.pass_obj
def migrate_command(obj: Context) -> None:
    """Create or upgrade the database schema to this version's."""
    config = obj.config(required=False)
    engine = obj.engine(config, create_schema=False)
    before, after = _database_step(lambda: migrate(engine))
    if before == after:
        click.echo(f"schema is up to date (revision {after})")
    else:
        click.echo(f"schema migrated from {before or 'empty'} to revision {after}")


@cli.command("collect")
@click.option(
    "--once",
    is_flag=True,
    required=True,
    help="Poll each cluster once and exit (required: collection runs once per call).",
)
@click.option(
    "--cluster",
    "clusters",
    multiple=True,
    metavar="NAME",
    help="Poll only this configured cluster (repeatable) [default: all].",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 256),
    default=8,
    show_default=True,
    help="Clusters polled at the same time.",
)
@format_option("table", "json", help="One line per poll for people, or JSON lines.")
@click.pass_obj
def collect_command(
    obj: Context, once: bool, clusters: Sequence[str], concurrency: int, fmt: str
) -> None:
    """Poll clusters for their iSCSI sessions and record the changes.

    Exits 0 when every poll was ok, 1 when any was partial or failed (each is recorded).
    """
    config = obj.config()
    try:
        # dict.fromkeys: `--cluster a --cluster a` polls a once, in the order given
        names = dict.fromkeys(clusters)
        selected = [config.cluster(n) for n in names] if names else list(config.clusters)
    except ConfigError as exc:
        raise ConfigProblem(str(exc)) from None
    if not selected:
        raise ConfigProblem(f"{obj.config_path}: clusters: none configured")
    store = HistoryStore(obj.engine(config))
    reports = _database_step(lambda: asyncio.run(_poll_all(selected, store, concurrency)))
    for report in reports:
        click.echo(_format_report(report, fmt))
    if any(r.outcome is not PollOutcome.OK for r in reports):
        raise SystemExit(EXIT_NOT_OK)


async def _poll_all(
    clusters: Sequence[ClusterConfig], store: HistoryStore, concurrency: int
) -> list[PollReport]:
    gate = asyncio.Semaphore(concurrency)

    async def one(cluster: ClusterConfig) -> PollReport:
        async with gate:
            return await poll_cluster(cluster, store)

    return list(await asyncio.gather(*(one(c) for c in clusters)))


def _format_report(report: PollReport, fmt: str) -> str:
    if fmt == "json":
        return orjson.dumps(
            {
                "cluster": report.cluster,
                "poll_id": report.poll_id,
                "outcome": report.outcome.value,
                "started_at": report.started_at.isoformat(),
                "finished_at": report.finished_at.isoformat(),
                "sessions": report.session_count,
                "rejected": report.rejected_count,
                "events": len(report.event_kinds),
                "error": report.error,
            }
        ).decode()
    sessions = "-" if report.session_count is None else f"{report.session_count} sessions"
    line = (
        f"{report.cluster}\t{report.outcome.value}\tpoll {report.poll_id}\t{sessions}\t"
        f"{len(report.event_kinds)} events ({event_summary(report.event_kinds)})"
    )
    return f"{line}\t{report.error}" if report.error else line


@cli.command("query")
@click.argument("sql")
@format_option("table", "json", "csv", help="Aligned columns, JSON lines, or CSV with a header.")
@click.pass_obj
def query_command(obj: Context, sql: str, fmt: str) -> None:
    """Run one read-only SQL statement against the history and print its rows.

    Works on the embedded PostgreSQL too, which runs only while a command needs it.
    """
    engine = obj.engine(obj.config(required=False))
    try:
        columns, rows = _database_step(lambda: read_only_query(engine, sql))
    except DBAPIError as exc:
        raise click.ClickException(f"query failed: {str(exc.orig).strip()}") from None
    for line in render_rows(columns, rows, fmt):
        click.echo(line)


@cli.command("demo")
@click.option("--clusters", type=click.IntRange(1, 20), default=2, show_default=True,
              help="Simulated ONTAP clusters.")
@click.option("--sessions", type=click.IntRange(0, 100_000), default=200, show_default=True,
              help="Sessions logged in to each cluster at start.")
@click.option("--churn", type=click.FloatRange(0), default=30.0, show_default=True,
              metavar="LOGINS_PER_MIN", help="Logins (and as many logouts) per minute per cluster.")
@click.option("--interval", type=click.FloatRange(0.5), default=3.0, show_default=True,
              metavar="SECONDS", help="Seconds between polls.")
@click.option("--duration", type=click.FloatRange(0, min_open=True), default=None,
              metavar="SECONDS", help="Stop by itself after this many seconds [default: Ctrl-C].")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the simulated world.")
@click.pass_obj
def demo_command(obj: Context, clusters: int, sessions: int, churn: float, interval: float,
                 duration: float | None, seed: int) -> None:
    """Run the simulator and the collector together, with a live view.

    Uses the embedded PostgreSQL unless a database is configured; stops on Ctrl-C or after
    --duration, then prints what to try next.
    """
    from collector.demo import run_demo  # rich and the simulator load only for the demo

    config = obj.config(required=False)
    engine = obj.engine(config)
    _database_step(lambda: run_demo(
        engine, obj.database_source, clusters=clusters, sessions=sessions, churn=churn,
        interval=interval, duration=duration, seed=seed, console=Console()))


cli.add_command(simulator_command)
cli.add_command(tail_command)
cli.add_command(sinks_command)
cli.add_command(run_command)


def main() -> None:
    cli(prog_name="iscsi-audit")
