"""The `iscsi-audit` command against a real PostgreSQL and a real ONTAP-shaped HTTP server.

`collect` builds its own httpx client, so the cluster it polls is a tiny Starlette app
served by uvicorn on 127.0.0.1 from a background thread: the whole path (config, password
from the environment, Basic auth, paging, store) runs as it does in production.
"""

from __future__ import annotations

import base64
import logging
import shlex
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
import uvicorn
from click.testing import CliRunner, Result
from sqlalchemy import Engine, create_engine, text
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.cli import cli
from collector.config import CONFIG_ENV, DATABASE_URL_ENV
from collector.db.database import DATA_DIR_ENV
from tests.ontap_pages import CLUSTER_UUID, session_record

USERNAME = "iscsi_audit"
PASSWORD = "fake-ontap-password"
PASSWORD_ENV = "FAKE_ONTAP_PASSWORD"
SESSION_COUNT = 3


# --- a cluster on a real socket -------------------------------------------------------------


def _authorized(request: Request) -> bool:
    token = base64.b64encode(f"{USERNAME}:{PASSWORD}".encode()).decode()
    return request.headers.get("authorization") == f"Basic {token}"


def _unauthorized() -> JSONResponse:
    body = {"error": {"message": "User is not authorized", "code": "6691623"}}
    return JSONResponse(body, status_code=401)


async def _cluster(request: Request) -> JSONResponse:
    if not _authorized(request):
        return _unauthorized()
    body = {"name": "cluster1", "uuid": CLUSTER_UUID, "version": {"full": "NetApp Release 9.14.1"}}
    return JSONResponse(body)


async def _sessions(request: Request) -> JSONResponse:
    if not _authorized(request):
        return _unauthorized()
    records = [session_record(n) for n in range(1, SESSION_COUNT + 1)]
    return JSONResponse({"records": records, "num_records": len(records)})


def fake_ontap() -> Starlette:
    return Starlette(
        routes=[
            Route("/api/cluster", _cluster),
            Route("/api/protocols/san/iscsi/sessions", _sessions),
        ]
    )


@pytest.fixture(scope="module")
def cluster_port() -> Iterator[int]:
    """A port on 127.0.0.1 where the fake cluster answers, for the whole module."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(fake_ontap(), log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "fake cluster did not start"
        time.sleep(0.01)
    yield sock.getsockname()[1]
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture
def closed_port() -> int:
    """A port nothing listens on: connecting is refused at once."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- the command's surroundings -------------------------------------------------------------


@pytest.fixture(autouse=True)
def command_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No config or database from the developer's environment; logging put back afterwards.

    The command takes over the root logger (its handler writes to the runner's stderr,
    which is closed once the run ends), so the test restores what pytest had.
    """
    for name in (CONFIG_ENV, DATABASE_URL_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    monkeypatch.chdir(tmp_path)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture
def fresh_db(empty_database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """An empty database the command uses (through $ISCSI_AUDIT_DATABASE_URL)."""
    monkeypatch.setenv(DATABASE_URL_ENV, empty_database_url)
    return empty_database_url


@pytest.fixture
def audit_db(database_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated database the command uses; the `engine` fixture reads the same one."""
    monkeypatch.setenv(DATABASE_URL_ENV, database_url)
    return database_url


def cluster_table(name: str, port: int, **extra: str) -> str:
    lines = [
        "[[clusters]]",
        f'name = "{name}"',
        f'url = "http://127.0.0.1:{port}"',
        "insecure_http = true",
        f'username = "{USERNAME}"',
        f'password_env = "{PASSWORD_ENV}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def dead_cluster_table(name: str, port: int) -> str:
    return cluster_table(name, port, retries="0", connect_timeout='"1s"')


def write_config(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "audit.toml"
    path.write_text(body, encoding="utf-8")
    return path


def run(args: Sequence[str]) -> Result:
    return CliRunner().invoke(cli, list(args))


def assert_usage_error(result: Result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    for word in words:
        assert word in result.stderr, result.stderr


def tables_in(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT table_schema || '.' || table_name FROM information_schema.tables"
                    " WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
            return [row[0] for row in rows]
    finally:
        engine.dispose()


def poll_log(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT cluster_name, outcome, session_count, error"
                " FROM iscsi_audit.poll_log ORDER BY cluster_name"
            )
        )
        return [dict(row._mapping) for row in rows]


# --- the console script -----------------------------------------------------------------------


def test_console_script_is_installed_and_prints_help() -> None:
    script = Path(sys.executable).parent / "iscsi-audit"
    done = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Usage: iscsi-audit" in done.stdout
    assert "collect" in done.stdout and "migrate" in done.stdout


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_text(command: str) -> None:
    result = run([command, "--help"])
    assert result.exit_code == 0, result.output
    assert cli.commands[command].help, command


# --- usage and configuration errors: exit 2, the file, the key, the problem, nothing written --


def test_config_error_exits_2_naming_file_key_and_problem(tmp_path: Path, fresh_db: str) -> None:
    body = cluster_table("prod-a", 443).replace("insecure_http = true\n", "")
    config = write_config(tmp_path, body)
    result = run(["--config", str(config), "collect", "--once"])
    assert_usage_error(result, f"{config}: clusters[0].url: ", "sends the password in clear")
    assert tables_in(fresh_db) == []


def test_config_named_by_the_environment_is_used(
    tmp_path: Path, fresh_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write_config(tmp_path, cluster_table("prod-a", 443, max_records="0"))
    monkeypatch.setenv(CONFIG_ENV, str(config))
    result = run(["collect", "--once"])
    assert_usage_error(result, f"{config}: clusters[0].max_records: ", "from 1 to 10000")
    assert tables_in(fresh_db) == []


@pytest.mark.parametrize("command", ["collect", "migrate"])
def test_a_config_file_that_was_named_but_is_missing_exits_2(
    tmp_path: Path, fresh_db: str, command: str
) -> None:
    missing = tmp_path / "typo.toml"
    args = ["--config", str(missing), command] + (["--once"] if command == "collect" else [])
    assert_usage_error(run(args), f"{missing}: no such file")
    assert tables_in(fresh_db) == []


def test_collect_without_the_default_config_file_says_it_is_missing(fresh_db: str) -> None:
    assert_usage_error(run(["collect", "--once"]), "iscsi-audit.toml: no such file")
    assert tables_in(fresh_db) == []


def test_collect_without_once_is_a_usage_error(
    tmp_path: Path, fresh_db: str, cluster_port: int
) -> None:
    config = write_config(tmp_path, cluster_table("prod-a", cluster_port))
    assert_usage_error(run(["--config", str(config), "collect"]), "Missing option '--once'")
    assert tables_in(fresh_db) == []


def test_collect_for_an_unknown_cluster_exits_2_naming_the_known_ones(
    tmp_path: Path, fresh_db: str, cluster_port: int
) -> None:
    config = write_config(tmp_path, cluster_table("prod-a", cluster_port))
    result = run(["--config", str(config), "collect", "--once", "--cluster", "prod-b"])
    assert_usage_error(
        result, f"{config}: clusters: no cluster named 'prod-b' (configured: prod-a)"
    )
    assert tables_in(fresh_db) == []


def test_collect_with_no_clusters_configured_exits_2(tmp_path: Path, fresh_db: str) -> None:
    config = write_config(tmp_path, "# clusters go here\n")
    result = run(["--config", str(config), "collect", "--once"])
    assert_usage_error(result, f"{config}: clusters: none configured")
    assert tables_in(fresh_db) == []


@pytest.mark.parametrize("url", ["not a url", "mysql://audit@db/audit"])
def test_a_bad_database_url_in_the_environment_is_named_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cluster_port: int, url: str
) -> None:
    monkeypatch.setenv(DATABASE_URL_ENV, url)
    config = write_config(tmp_path, cluster_table("prod-a", cluster_port))
    result = run(["--config", str(config), "collect", "--once"])
    assert_usage_error(result, f"${DATABASE_URL_ENV}: ")
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_bad_database_url_in_the_file_is_named_by_its_key(tmp_path: Path) -> None:
    config = write_config(tmp_path, '[database]\nurl = "sqlite:///audit.db"\n')
    result = run(["--config", str(config), "migrate"])
    assert_usage_error(result, f"{config}: database.url: ", "is not PostgreSQL")


# --- migrate ----------------------------------------------------------------------------------


def test_migrate_creates_the_schema_then_reports_it_up_to_date(fresh_db: str) -> None:
    first = run(["migrate"])
    assert first.exit_code == 0, first.output
    assert first.stdout.startswith("schema migrated from empty to revision ")
    assert "iscsi_audit.polls" in tables_in(fresh_db)
    second = run(["migrate"])
    assert second.exit_code == 0, second.output
    assert second.stdout.startswith("schema is up to date (revision ")


@pytest.mark.usefixtures("audit_db")
def test_a_cluster_with_verify_false_is_warned_about_when_the_command_starts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        '[[clusters]]\nname = "lab"\nurl = "https://lab.example.com"\nverify = false\n'
        f'username = "{USERNAME}"\npassword_env = "{PASSWORD_ENV}"\n'
    )
    config = write_config(tmp_path, body)
    # the command replaces the root logger's handlers; listen where its records start
    collector_log = logging.getLogger("collector")
    collector_log.addHandler(caplog.handler)
    try:
        result = run(["--config", str(config), "migrate"])
    finally:
        collector_log.removeHandler(caplog.handler)
    assert result.exit_code == 0, result.output
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "TLS verification is OFF for cluster lab (verify = false): its answers and"
        " credentials are open to interception"
    ]
    assert vars(warnings[0])["cluster"] == "lab"


# --- collect --once against a cluster on a socket ----------------------------------------------


@pytest.mark.usefixtures("audit_db")
def test_collect_once_records_the_poll_and_prints_a_line(
    tmp_path: Path, engine: Engine, cluster_port: int
) -> None:
    config = write_config(tmp_path, cluster_table("prod-a", cluster_port))
    result = run(["--config", str(config), "collect", "--once"])
    assert result.exit_code == 0, result.output
    (line,) = result.stdout.splitlines()
    name, outcome, poll, sessions, events = line.split("\t")
    assert (name, outcome, sessions) == ("prod-a", "ok", f"{SESSION_COUNT} sessions")
    assert poll.startswith("poll ")
    assert f"{SESSION_COUNT} connect" in events
    assert poll_log(engine) == [
        {"cluster_name": "prod-a", "outcome": "ok", "session_count": SESSION_COUNT, "error": None}
    ]


def test_collect_once_migrates_an_empty_database_first(
    tmp_path: Path, fresh_db: str, cluster_port: int
) -> None:
    config = write_config(tmp_path, cluster_table("prod-a", cluster_port))
    result = run(["--config", str(config), "collect", "--once"])
    assert result.exit_code == 0, result.output
    engine = create_engine(fresh_db)
    try:
        assert [row["outcome"] for row in poll_log(engine)] == ["ok"]
    finally:
        engine.dispose()


@pytest.mark.usefixtures("audit_db")
def test_an_unreachable_cluster_exits_1_and_the_reachable_one_is_still_recorded(
    tmp_path: Path, engine: Engine, cluster_port: int, closed_port: int
) -> None:
    body = cluster_table("prod-a", cluster_port) + dead_cluster_table("prod-b", closed_port)
    config = write_config(tmp_path, body)
    started = time.monotonic()
    result = run(["--config", str(config), "collect", "--once"])
    assert time.monotonic() - started < 10
    assert result.exit_code == 1, result.output
    lines = {line.split("\t")[0]: line.split("\t") for line in result.stdout.splitlines()}
    assert lines["prod-a"][1] == "ok"
    assert lines["prod-b"][1] == "failed"
    ok, failed = poll_log(engine)
    assert ok == {
        "cluster_name": "prod-a",
        "outcome": "ok",
        "session_count": SESSION_COUNT,
        "error": None,
    }
    assert (failed["cluster_name"], failed["outcome"]) == ("prod-b", "failed")
    assert "ConnectError" in failed["error"]


@pytest.mark.usefixtures("audit_db")
def test_collect_once_for_a_named_cluster_polls_it_once_and_no_other(
    tmp_path: Path, engine: Engine, cluster_port: int, closed_port: int
) -> None:
    body = cluster_table("prod-a", cluster_port) + dead_cluster_table("prod-b", closed_port)
    config = write_config(tmp_path, body)
    args = ["--config", str(config), "collect", "--once", "--cluster", "prod-a"]
    result = run([*args, "--cluster", "prod-a"])
    assert result.exit_code == 0, result.output
    assert [row["cluster_name"] for row in poll_log(engine)] == ["prod-a"]


@pytest.mark.usefixtures("audit_db")
def test_collect_once_prints_json_lines_with_format_json(
    tmp_path: Path, cluster_port: int, closed_port: int
) -> None:
    body = cluster_table("prod-a", cluster_port) + dead_cluster_table("prod-b", closed_port)
    config = write_config(tmp_path, body)
    result = run(["--config", str(config), "collect", "--once", "--format", "json"])
    assert result.exit_code == 1, result.output
    polls = {p["cluster"]: p for p in map(orjson.loads, result.stdout.splitlines())}
    assert set(polls) == {"prod-a", "prod-b"}
    good, dead = polls["prod-a"], polls["prod-b"]
    assert (good["outcome"], good["sessions"], good["error"]) == ("ok", SESSION_COUNT, None)
    assert good["events"] >= SESSION_COUNT
    assert isinstance(good["poll_id"], int)
    assert good["started_at"] <= good["finished_at"]
    assert (dead["outcome"], dead["sessions"]) == ("failed", None)
    assert "ConnectError" in dead["error"]


@pytest.mark.usefixtures("audit_db")
def test_a_password_command_that_fails_is_a_failed_poll_that_never_shows_its_output(
    tmp_path: Path, engine: Engine, cluster_port: int
) -> None:
    helper = tmp_path / "password-helper.py"
    helper.write_text(
        f"import sys\nprint({PASSWORD!r})\nprint({PASSWORD!r}, file=sys.stderr)\nsys.exit(5)\n",
        encoding="utf-8",
    )
    command = orjson.dumps(shlex.join([sys.executable, str(helper)])).decode()
    body = cluster_table("prod-a", cluster_port).replace(
        f'password_env = "{PASSWORD_ENV}"', f"password_command = {command}"
    )
    config = write_config(tmp_path, body)
    result = run(["--config", str(config), "collect", "--once"])
    assert result.exit_code == 1, result.output
    assert PASSWORD not in result.output
    (failed,) = poll_log(engine)
    assert failed["error"] == "password_command exited with status 5"


def test_an_empty_libpq_password_is_no_password() -> None:
    from collector.db.database import sqlalchemy_url

    assert sqlalchemy_url("postgresql://postgres:@/postgres?host=/run/pg") == (
        "postgresql+psycopg://postgres@/postgres?host=%2Frun%2Fpg")
    assert sqlalchemy_url("postgresql://u:pw@h/db") == "postgresql+psycopg://u:pw@h/db"
