"""The daemon as operators meet it: a real `iscsi-audit run` process against the ONTAP
simulator on real sockets and a real PostgreSQL, steered by signals and scraped over HTTP.
Also the parts it is made of that need a real clock or server: /healthz, a write that a
stop must not cut in half, and a password rotated under a running collector.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, text
from starlette.types import Receive, Scope, Send

from collector.config import ClusterConfig, PasswordSource
from collector.db.database import head_revision, make_engine
from collector.db.store import ClusterTransaction, HistoryStore
from collector.diff import PollOutcome
from collector.health import OperationsServer
from collector.metrics import CollectorMetrics
from collector.pipeline import poll_cluster
from collector.simulator import SESSIONS, Fault, SimulatorApp, World
from collector.simulator.server import SimulatorServer
from tests.ontap_pages import FakeOntap, session_record

PASSWORD = "sim-password"
SESSIONS_PER_CLUSTER = 30
REPO = Path(__file__).resolve().parents[1]


# --- the simulator on loopback and the daemon in a subprocess -------------------------


class WatchedSimulator(SimulatorApp):
    """The simulator, noting each request's port and query so a test can see a walk's progress."""

    def __init__(self, world: World) -> None:
        super().__init__(world, password=PASSWORD)
        self.requests: list[tuple[int, str, str]] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            port = scope["server"][1] if scope.get("server") else 0
            self.requests.append((port, scope["path"], scope["query_string"].decode()))
        await super().__call__(scope, receive, send)

    def asked_for_page_2(self, port: int) -> bool:
        return any(p == port and path == SESSIONS and "start." in query
                   for p, path, query in list(self.requests))


@pytest.fixture
def ontap() -> Iterator[tuple[SimulatorServer, WatchedSimulator]]:
    app = WatchedSimulator(World.generate(clusters=2, sessions=SESSIONS_PER_CLUSTER, seed=5))
    server = SimulatorServer(app, port=0)
    server.start()
    yield server, app
    server.stop()


def cluster_toml(name: str, url: str, **settings: object) -> str:
    keys: dict[str, object] = {
        "name": name, "url": url, "insecure_http": True, "username": "admin",
        "password_env": "SIM_PASSWORD", "interval": "1s", "jitter": 0, "max_records": 10,
        "retries": 0, **settings,
    }
    lines = [f"{key} = {orjson.dumps(value).decode()}" for key, value in keys.items()]
    return "[[clusters]]\n" + "\n".join(lines) + "\n\n"


class Daemon:
    """`iscsi-audit run` in a subprocess, with JSON logs to a file the test can read."""

    def __init__(self, config: Path, database_url: str, log: Path, *options: str) -> None:
        env = {**os.environ, "ISCSI_AUDIT_DATABASE_URL": database_url, "SIM_PASSWORD": PASSWORD}
        self.log = log
        with log.open("wb") as sink:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "collector", "--log-format", "json",
                 "--config", str(config), "run", *options],
                stdout=subprocess.DEVNULL, stderr=sink, env=env, cwd=REPO,
            )

    def lines(self) -> list[dict[str, Any]]:
        text_ = self.log.read_text(encoding="utf-8")
        return [orjson.loads(line) for line in text_.splitlines() if line.startswith("{")]

    def logged(self, fragment: str) -> bool:
        return any(fragment in line["message"] for line in self.lines())

    def signal(self, sig: signal.Signals) -> None:
        self.process.send_signal(sig)

    def stop(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; return the exit status and the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        status = self.process.wait(timeout)
        return status, time.monotonic() - started

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def daemon(tmp_path: Path, database_url: str) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, *options: str) -> Daemon:
        started.append(Daemon(config, database_url, tmp_path / f"run{len(started)}.log",
                              *options))
        return started[-1]

    yield start
    for process in started:
        process.kill()


def wait_for(condition: Callable[[], object], timeout: float = 10, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.05)


def polls(engine: Engine, label: str) -> list[tuple[str, int | None]]:
    with engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(
            "SELECT outcome, session_count FROM iscsi_audit.polls"
            " WHERE cluster_label = :l ORDER BY poll_id"), {"l": label})]


def open_sessions(engine: Engine, label: str) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text(
            "SELECT count(*) FROM iscsi_audit.sessions s JOIN iscsi_audit.clusters c"
            " USING (cluster_id) WHERE c.label = :l AND s.ended_at IS NULL"), {"l": label}))


def test_sigterm_mid_walk_leaves_no_half_poll_and_exits_0_promptly(
    ontap, daemon, tmp_config: Path, engine: Engine
) -> None:
    server, app = ontap
    # page 2 of "slow" takes 30 s: SIGTERM arrives while its walk is half done
    app.inject(Fault.latency(30, endpoint=SESSIONS, page=2), cluster=0)
    tmp_config.write_text(cluster_toml("slow", server.base_url(0))
                          + cluster_toml("steady", server.base_url(1)))
    run = daemon(tmp_config)
    wait_for(lambda: app.asked_for_page_2(server.ports[0]), what="slow's page 2")
    wait_for(lambda: polls(engine, "steady"), what="a poll of steady")

    status, seconds = run.stop()

    assert status == 0
    assert seconds < 5
    # the interrupted walk recorded nothing; every poll that was recorded is whole
    assert polls(engine, "slow") == []
    assert open_sessions(engine, "slow") == 0
    assert set(polls(engine, "steady")) == {("ok", SESSIONS_PER_CLUSTER)}
    assert open_sessions(engine, "steady") == SESSIONS_PER_CLUSTER
    assert run.logged("SIGTERM: stopping") and run.logged("collector stopped")


def test_sighup_picks_up_a_new_cluster(ontap, daemon, tmp_config: Path, engine: Engine) -> None:
    server, _ = ontap
    tmp_config.write_text(cluster_toml("first", server.base_url(0)))
    run = daemon(tmp_config)
    wait_for(lambda: polls(engine, "first"), what="a poll of first")

    tmp_config.write_text(cluster_toml("first", server.base_url(0))
                          + cluster_toml("second", server.base_url(1)))
    run.signal(signal.SIGHUP)
    wait_for(lambda: polls(engine, "second"), what="a poll of second")

    assert run.logged("configuration reloaded: added second")
    assert polls(engine, "second")[0] == ("ok", SESSIONS_PER_CLUSTER)
    assert run.stop()[0] == 0


def test_a_bad_config_on_sighup_is_refused_and_the_old_one_keeps_running(
    ontap, daemon, tmp_config: Path, engine: Engine
) -> None:
    server, _ = ontap
    tmp_config.write_text(cluster_toml("first", server.base_url(0)))
    run = daemon(tmp_config)
    wait_for(lambda: polls(engine, "first"), what="a poll of first")

    tmp_config.write_text(cluster_toml("first", server.base_url(0), interval="soon"))
    run.signal(signal.SIGHUP)
    wait_for(lambda: run.logged("configuration refused"), what="the refusal")
    before = len(polls(engine, "first"))
    wait_for(lambda: len(polls(engine, "first")) >= before + 2, what="more polls of first")

    refusal = next(line for line in run.lines() if "refused" in line["message"])
    assert refusal["level"] == "error"
    assert "clusters[0].interval: 'soon': expected a duration" in refusal["message"]
    assert run.stop()[0] == 0


def test_run_forwards_committed_events_to_its_sinks(
    ontap, daemon, tmp_config: Path, tmp_path: Path
) -> None:
    server, _ = ontap
    out = tmp_path / "events.jsonl"
    tmp_config.write_text(cluster_toml("first", server.base_url(0))
                          + f'[[sinks]]\nname = "audit-file"\ntype = "file"\npath = "{out}"\n')
    run = daemon(tmp_config)

    def delivered() -> list[dict[str, Any]]:
        lines = out.read_text().splitlines() if out.exists() else []
        return [orjson.loads(line) for line in lines]

    wait_for(lambda: len(delivered()) >= SESSIONS_PER_CLUSTER, what="events in the file")
    assert run.stop()[0] == 0
    assert {e["kind"] for e in delivered()} == {"connect"}


def test_metrics_show_a_failed_poll(daemon, tmp_config: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on: the cluster is down
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    tmp_config.write_text(cluster_toml("down", f"http://127.0.0.1:{closed_port}"))
    run = daemon(tmp_config, "--metrics-port", "0")
    wait_for(lambda: run.logged("/healthz"), what="the metrics endpoint")
    base = next(line["message"].split()[1] for line in run.lines()
                if "/healthz" in line["message"]).removesuffix("/metrics")

    def failed_polls() -> bool:
        body = httpx.get(f"{base}/metrics").text
        return 'iscsi_audit_polls_total{cluster="down",outcome="failed"} 2.0' in body

    wait_for(failed_polls, what="two failed polls in the metrics")
    body = httpx.get(f"{base}/metrics").text
    assert 'iscsi_audit_consecutive_failures{cluster="down"} 2.0' in body
    assert 'iscsi_audit_backoff_seconds{cluster="down"} 2.0' in body
    assert 'iscsi_audit_seconds_since_last_ok_poll{cluster="down"} +Inf' in body
    assert httpx.get(f"{base}/healthz").status_code == 200
    assert run.stop()[0] == 0


def test_clusters_beyond_the_memory_budget_are_polled_from_the_database(
    ontap, daemon, tmp_config: Path, engine: Engine
) -> None:
    server, _ = ontap
    # room for one cluster's 30 sessions, not for both
    tmp_config.write_text("[collector]\nremember_sessions = 40\n\n"
                          + cluster_toml("first", server.base_url(0))
                          + cluster_toml("second", server.base_url(1)))
    run = daemon(tmp_config, "--metrics-port", "0")
    wait_for(lambda: run.logged("/healthz"), what="the metrics endpoint")
    base = next(line["message"].split()[1] for line in run.lines()
                if "/healthz" in line["message"]).removesuffix("/metrics")
    wait_for(lambda: min(len(polls(engine, "first")), len(polls(engine, "second"))) >= 3,
             what="three polls of each cluster")

    body = httpx.get(f"{base}/metrics").text
    assert run.stop()[0] == 0
    assert f"iscsi_audit_remembered_sessions {float(SESSIONS_PER_CLUSTER)}" in body
    for label in ("first", "second"):  # remembered or not, the history is the same
        assert set(polls(engine, label)) == {("ok", SESSIONS_PER_CLUSTER)}
        assert open_sessions(engine, label) == SESSIONS_PER_CLUSTER


# --- /healthz ------------------------------------------------------------------------


@contextmanager
def endpoint(engine: Engine) -> Iterator[str]:
    server = OperationsServer(CollectorMetrics().registry, engine, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def test_healthz_is_200_when_the_database_is_at_head(engine: Engine) -> None:
    with endpoint(engine) as url:
        answer = httpx.get(f"{url}/healthz")
    assert answer.status_code == 200
    assert answer.json() == {"ready": True, "reason": "ready",
                             "schema_revision": head_revision(), "head_revision": head_revision()}


def test_healthz_is_503_when_the_schema_is_behind_head(engine: Engine) -> None:
    previous = ScriptDirectory(str(REPO / "migrations")).get_revision(head_revision()).down_revision
    with engine.begin() as conn:
        conn.execute(text("UPDATE iscsi_audit.alembic_version SET version_num = :v"),
                     {"v": previous})
    with endpoint(engine) as url:
        answer = httpx.get(f"{url}/healthz")
    assert answer.status_code == 503
    assert answer.json()["reason"] == (
        f"schema at revision {previous}, this version needs {head_revision()}")


def test_healthz_is_503_on_an_empty_database(empty_database_url: str) -> None:
    engine = make_engine(empty_database_url)
    with endpoint(engine) as url:
        answer = httpx.get(f"{url}/healthz")
    engine.dispose()
    assert answer.status_code == 503
    assert answer.json()["reason"].startswith("schema at revision none")


def test_healthz_is_503_when_the_database_is_unreachable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = create_engine(f"postgresql+psycopg://audit:hunter2@127.0.0.1:{port}/audit")
    with endpoint(engine) as url:
        answer = httpx.get(f"{url}/healthz")
    assert answer.status_code == 503
    assert answer.json()["reason"].startswith("database unreachable:")
    assert "hunter2" not in answer.text


# --- a stop during a write; a rotated password ----------------------------------------


class PausingStore(HistoryStore):
    """Holds each poll's transaction open until the test lets it commit."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.inside = threading.Event()
        self.go_on = threading.Event()

    @contextmanager
    def cluster_transaction(self, *args: Any, **kwargs: Any) -> Iterator[ClusterTransaction]:
        with super().cluster_transaction(*args, **kwargs) as tx:
            self.inside.set()
            assert self.go_on.wait(10)
            yield tx


def _lab(monkeypatch: pytest.MonkeyPatch, password: PasswordSource | None = None) -> ClusterConfig:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return ClusterConfig("lab", "https://lab.example.com", username="admin",
                         password=password or PasswordSource("env", "LAB_PASSWORD"))


async def test_a_poll_cancelled_while_writing_commits_whole_then_stops(
    monkeypatch, engine: Engine
) -> None:
    store = PausingStore(engine)
    ontap = FakeOntap(pages=[[session_record(n) for n in range(1, 6)]])
    poll = asyncio.create_task(poll_cluster(_lab(monkeypatch), store, transport=ontap.transport()))
    await asyncio.to_thread(store.inside.wait, 10)

    poll.cancel()
    await asyncio.sleep(0.1)
    store.go_on.set()
    with pytest.raises(asyncio.CancelledError):
        await poll

    assert polls(engine, "lab") == [("ok", 5)]
    assert open_sessions(engine, "lab") == 5


@pytest.mark.parametrize("kind", ["file", "command"])
async def test_a_rotated_password_is_read_again_after_a_401(
    monkeypatch, store: HistoryStore, tmp_path: Path, kind: str
) -> None:
    secret = tmp_path / "password"
    secret.write_text("old-password\n")
    ontap = FakeOntap(pages=[[session_record(1)]], password="new-password")

    def rotate_then_answer(request: httpx.Request) -> httpx.Response:
        secret.write_text("new-password\n")  # the rotation lands after the collector read it
        return ontap.handle(request)

    where = str(secret) if kind == "file" else f"cat {secret}"
    cluster = _lab(monkeypatch, PasswordSource(kind, where))
    report = await poll_cluster(cluster, store, transport=httpx.MockTransport(rotate_then_answer))

    assert report.outcome is PollOutcome.OK
    assert [r.headers["authorization"] == ontap.requests[0].headers["authorization"]
            for r in ontap.requests] == [True, False, False]


async def test_an_unchanged_password_is_not_sent_twice_after_a_401(
    monkeypatch, store: HistoryStore, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("wrong-password\n")
    ontap = FakeOntap(pages=[[session_record(1)]], password="right-password")

    cluster = _lab(monkeypatch, PasswordSource("file", str(secret)))
    report = await poll_cluster(cluster, store, transport=ontap.transport())

    assert report.outcome is PollOutcome.FAILED
    assert "401" in (report.error or "")
    assert len(ontap.requests) == 1  # a second try would count against the account lockout
