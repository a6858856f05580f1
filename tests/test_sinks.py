"""Sinks against real receivers on loopback: every event at least once, in order, resumed.

The receivers are the real thing in miniature: asyncio UDP and TCP syslog listeners (TLS
with a trustme CA) that parse RFC 6587 octet-counted frames, and a Starlette webhook
served by uvicorn that is first not listening, then answers 503, then accepts.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import ssl
import time
import tomllib
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
import trustme
import uvicorn
from click.testing import CliRunner
from prometheus_client import REGISTRY
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from collector.cli import cli
from collector.config import DATABASE_URL_ENV, ConfigError, parse_config
from collector.db.feed import FeedEvent
from collector.sinks import run_sinks
from collector.sinks.config import FileSink, SinkConfig, SyslogSink, WebhookSink
from collector.sinks.formats import escape_param, octet_counted, syslog_message
from collector.sinks.positions import all_positions
from collector.sinks.runner import Backoff
from tests.event_source import EventSource

FAST = Backoff(initial=0.05, maximum=0.2)


@pytest.fixture
def source(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> EventSource:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return EventSource(engine)


@asynccontextmanager
async def running(engine: Engine, *sinks: SinkConfig) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_sinks(engine, sinks, stop, backoff=FAST, poll_interval=0.2))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


def position(engine: Engine, sink: str) -> tuple[int, str | None]:
    [row] = [p for p in all_positions(engine) if p.sink_name == sink]
    return row.last_event_id, row.last_error


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def metric(name: str, sink: str) -> float:
    return REGISTRY.get_sample_value(name, {"sink": sink}) or 0.0


def first_occurrences(ids: list[int]) -> list[int]:
    return list(dict.fromkeys(ids))


# --- RFC 5424 (pure) -----------------------------------------------------------------------


EVENT = FeedEvent(
    event_id=42, cluster="lab", cluster_uuid=uuid.UUID(int=1), kind="connect",
    observed_at=datetime(2026, 11, 3, 2, 13, 5, 120000, tzinfo=UTC), occurred_after=None,
    svm="svm1", initiator='iqn.1994-05.com.redhat:"odd]\\host', isid="40:00:01:37:00:01",
    tsih=7, target_portal_group="lif1", session_id=3, poll_id=9, details={"cid": 1},
)


def test_syslog_message_is_rfc5424_with_the_event_as_structured_data_and_json() -> None:
    message = syslog_message(EVENT, facility=4, app_name="iscsi-audit", hostname="collector1",
                             procid="321")

    header, _, json_part = message.partition(b"] ")
    assert header.decode() == (
        '<37>1 2026-11-03T02:13:05.120000Z collector1 iscsi-audit 321 connect'
        ' [iscsi-audit@32473 event_id="42" cluster="lab" svm="svm1"'
        ' initiator="iqn.1994-05.com.redhat:\\"odd\\]\\\\host" isid="40:00:01:37:00:01"'
        ' tsih="7" tpg="lif1" poll_id="9"'
    )
    assert orjson.loads(json_part)["initiator"] == 'iqn.1994-05.com.redhat:"odd]\\host'


def test_param_values_escape_quote_backslash_and_bracket() -> None:
    assert escape_param('a"b\\c]d') == 'a\\"b\\\\c\\]d'


def test_header_fields_never_carry_spaces() -> None:
    message = syslog_message(EVENT, facility=16, app_name="iscsi-audit", hostname="my host",
                             procid="")

    assert message.startswith(b"<133>1 2026-11-03T02:13:05.120000Z myhost iscsi-audit - connect ")


def test_octet_counting_frames_by_byte_length() -> None:
    assert octet_counted("é".encode()) == b"2 \xc3\xa9"


# --- configuration -------------------------------------------------------------------------


def sinks_config(tmp_path: Path, *tables: dict[str, Any]) -> tuple[SinkConfig, ...]:
    return parse_config({"sinks": list(tables)}, tmp_path / "iscsi-audit.toml").sinks


def test_each_sink_type_parses_with_its_defaults(tmp_path: Path) -> None:
    syslog, webhook, file = sinks_config(
        tmp_path,
        {"name": "siem", "type": "syslog", "address": "siem.example.com:6514",
         "transport": "tls", "facility": "local3"},
        {"name": "hec", "type": "webhook", "url": "https://splunk.example.com:8088/services/"
         "collector/event", "token_env": "SPLUNK_HEC_TOKEN", "token_scheme": "Splunk",
         "format": "splunk_hec", "timeout": "5s", "headers": {"X-Source": "lab"}},
        {"name": "archive", "type": "file", "path": str(tmp_path / "events.jsonl")},
    )

    assert syslog == SyslogSink(name="siem", host="siem.example.com", port=6514,
                                transport="tls", facility=19)
    assert webhook == WebhookSink(
        name="hec", url="https://splunk.example.com:8088/services/collector/event",
        headers=(("X-Source", "lab"),), token_env="SPLUNK_HEC_TOKEN", token_scheme="Splunk",
        format="splunk_hec", timeout=5.0)
    assert file == FileSink(name="archive", path=tmp_path / "events.jsonl")


@pytest.mark.parametrize(("table", "message"), [
    ({"name": "s", "type": "kafka"},
     "sinks[0].type: 'kafka': must be one of syslog, webhook, file"),
    ({"name": "s", "type": "syslog", "address": "siem"},
     "sinks[0].address: 'siem': expected host:port"),
    ({"name": "s", "type": "syslog", "address": "siem:514", "ca_file": "/etc/hosts"},
     "sinks[0].ca_file: is for transport = \"tls\", not 'udp'"),
    ({"name": "s", "type": "webhook", "url": "https://h/x", "headers": {"Authorization": "x"}},
     "sinks[0].headers.Authorization: secrets never in the file; use token_env"),
    ({"name": "s", "type": "webhook", "url": "https://u:p@h/x"},
     "sinks[0].url: credentials in the URL end up in logs; use token_env"),
    ({"name": "s", "type": "file", "path": "/no/such/dir/x.jsonl"},
     "sinks[0].path: /no/such/dir: no such directory"),
    ({"name": "s", "type": "file", "path": "/tmp/x", "adress": "x"},
     "sinks[0].adress: unknown key"),
])
def test_bad_sink_tables_are_refused_with_file_and_key(
    tmp_path: Path, table: dict[str, Any], message: str
) -> None:
    expected = f"{tmp_path / 'iscsi-audit.toml'}: {message}"
    with pytest.raises(ConfigError, match="^" + re.escape(expected)):
        sinks_config(tmp_path, table)


def test_two_sinks_may_not_share_a_name(tmp_path: Path) -> None:
    table = {"name": "a", "type": "file", "path": str(tmp_path / "x")}

    with pytest.raises(ConfigError, match=r"sinks\[1\].name: 'a' is used twice"):
        sinks_config(tmp_path, table, table)


# --- syslog receivers ------------------------------------------------------------------------


class SyslogReceiver:
    """Collects the messages a syslog listener got, parsed down to their event ids."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []

    @property
    def event_ids(self) -> list[int]:
        return [int(re.search(rb'event_id="(\d+)"', m)[1]) for m in self.messages]  # type: ignore[index]

    async def read_frames(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # RFC 6587 octet counting: "LEN SP MSG"
        try:
            while length := await reader.readuntil(b" "):
                self.messages.append(await reader.readexactly(int(length[:-1])))
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, receiver: SyslogReceiver) -> None:
        self.receiver = receiver

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.receiver.messages.append(data)


async def test_udp_syslog_receives_every_event_in_order(source: EventSource,
                                                        engine: Engine) -> None:
    receiver = SyslogReceiver()
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        lambda: _Datagrams(receiver), local_addr=("127.0.0.1", 0))
    port = transport.get_extra_info("sockname")[1]
    sink = SyslogSink(name="udp", host="127.0.0.1", port=port, batch_size=2)
    try:
        async with running(engine, sink):
            await source.poll(login=range(1, 4))
            await source.poll(logout=(2,))
            await until(lambda: len(receiver.messages) == 4)
    finally:
        transport.close()

    assert receiver.event_ids == [1, 2, 3, 4]
    assert receiver.messages[3].startswith(b"<37>1 ")
    assert b" disconnect [iscsi-audit@32473 event_id=\"4\"" in receiver.messages[3]
    assert position(engine, "udp") == (4, None)
    assert metric("iscsi_audit_sink_last_delivered_event_id", "udp") == 4
    assert metric("iscsi_audit_sink_lag_events", "udp") == 0


async def test_tcp_syslog_that_is_down_gets_everything_once_it_listens(
    source: EventSource, engine: Engine
) -> None:
    port = free_port()
    sink = SyslogSink(name="tcp", host="127.0.0.1", port=port, transport="tcp", batch_size=2)
    receiver = SyslogReceiver()
    failures_before = metric("iscsi_audit_sink_delivery_failures_total", "tcp")
    async with running(engine, sink):
        await source.poll(login=range(1, 4))
        await until(lambda: position(engine, "tcp")[1] is not None)
        # down: nothing delivered, the error is visible in the table and the metrics
        assert position(engine, "tcp")[0] == 0
        assert "Connect call failed" in str(position(engine, "tcp")[1])
        server = await asyncio.start_server(receiver.read_frames, "127.0.0.1", port)
        try:
            await source.poll(login=(4,))
            await until(lambda: position(engine, "tcp")[0] == 4)
            await until(lambda: len(receiver.messages) >= 4)
        finally:
            server.close()

    assert first_occurrences(receiver.event_ids) == [1, 2, 3, 4]
    assert position(engine, "tcp") == (4, None)
    assert metric("iscsi_audit_sink_delivery_failures_total", "tcp") > failures_before


async def test_tls_syslog_verifies_the_receiver_with_the_configured_ca(
    source: EventSource, engine: Engine, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    receiver = SyslogReceiver()
    server = await asyncio.start_server(receiver.read_frames, "127.0.0.1", 0, ssl=server_context)
    port = server.sockets[0].getsockname()[1]
    sink = SyslogSink(name="tls", host="127.0.0.1", port=port, transport="tls",
                      ca_file=tmp_path / "ca.pem")
    try:
        async with running(engine, sink):
            await source.poll(login=range(1, 3))
            await until(lambda: len(receiver.messages) == 2)
    finally:
        server.close()

    assert receiver.event_ids == [1, 2]
    assert position(engine, "tls") == (2, None)


# --- webhook --------------------------------------------------------------------------------


class Webhook:
    """A Splunk-HEC-like endpoint that answers 503 to its first `refuse` requests."""

    def __init__(self, refuse: int) -> None:
        self.refuse = refuse
        self.batches: list[list[dict[str, Any]]] = []
        self.authorizations: set[str | None] = set()

    async def collect(self, request: Request) -> Response:
        self.authorizations.add(request.headers.get("authorization"))
        if self.refuse > 0:
            self.refuse -= 1
            return Response("busy", status_code=503)
        self.batches.append(orjson.loads(await request.body()))
        return Response('{"text":"Success","code":0}', media_type="application/json")

    @property
    def event_ids(self) -> list[int]:
        return [event["event_id"] for batch in self.batches for event in batch]


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[None]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve())
    await until(lambda: server.started)
    try:
        yield
    finally:
        server.should_exit = True
        await task


async def test_webhook_down_then_busy_then_back_receives_everything_in_order(
    source: EventSource, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HEC_TOKEN", "s3cr3t-token")
    port = free_port()
    hook = Webhook(refuse=2)
    app = Starlette(routes=[Route("/collector", hook.collect, methods=["POST"])])
    sink = WebhookSink(name="hec", url=f"http://127.0.0.1:{port}/collector",
                       token_env="HEC_TOKEN", token_scheme="Splunk", batch_size=3)
    async with running(engine, sink):
        await source.poll(login=range(1, 6))
        await until(lambda: position(engine, "hec")[1] is not None)  # refused
        async with serving(app, port):
            await until(lambda: hook.refuse == 0)  # answered 503 twice
            await source.poll(logout=(1, 2))
            await until(lambda: position(engine, "hec")[0] == 7)

    assert first_occurrences(hook.event_ids) == [1, 2, 3, 4, 5, 6, 7]
    assert all(b == sorted(b) for b in ([e["event_id"] for e in b] for b in hook.batches))
    assert hook.authorizations == {"Splunk s3cr3t-token"}
    assert position(engine, "hec") == (7, None)
    assert all("s3cr3t" not in str(p.last_error) for p in all_positions(engine))


# --- file, and a restart -----------------------------------------------------------------------


async def test_file_sink_resumes_after_a_restart_without_loss(
    source: EventSource, engine: Engine, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    sink = FileSink(name="archive", path=path, batch_size=2)
    async with running(engine, sink):
        await source.poll(login=range(1, 4))
        await until(lambda: position(engine, "archive")[0] == 3)

    await source.poll(login=(4, 5))  # while no sink runs
    await source.poll(logout=(1,))

    async with running(engine, sink):
        await until(lambda: position(engine, "archive")[0] == 6)

    lines = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert [e["event_id"] for e in lines] == [1, 2, 3, 4, 5, 6]
    assert [e["kind"] for e in lines] == ["connect"] * 5 + ["disconnect"]
    assert lines[0]["cluster"] == "lab" and lines[0]["svm"] == "svm1"


async def test_a_sink_that_is_down_delays_only_itself(
    source: EventSource, engine: Engine, tmp_path: Path
) -> None:
    down = SyslogSink(name="down", host="127.0.0.1", port=free_port(), transport="tcp")
    file = FileSink(name="up", path=tmp_path / "events.jsonl")
    async with running(engine, down, file):
        await source.poll(login=range(1, 3))
        await until(lambda: position(engine, "up")[0] == 2)
        await until(lambda: position(engine, "down")[1] is not None)

    assert position(engine, "down")[0] == 0
    assert metric("iscsi_audit_sink_lag_events", "up") == 0


# --- iscsi-audit sinks status ------------------------------------------------------------------


async def test_sinks_status_shows_position_lag_and_last_error(
    source: EventSource, engine: Engine, database_url: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    config = tmp_path / "iscsi-audit.toml"
    config.write_text(
        f'[[sinks]]\nname = "archive"\ntype = "file"\npath = "{tmp_path / "e.jsonl"}"\n'
        f'[[sinks]]\nname = "siem"\ntype = "syslog"\ntransport = "tcp"\n'
        f'address = "127.0.0.1:{free_port()}"\n')
    sinks = parse_config(tomllib.loads(config.read_text()), config).sinks
    async with running(engine, *sinks):
        await source.poll(login=range(1, 4))
        await until(lambda: position(engine, "archive")[0] == 3)
        await until(lambda: position(engine, "siem")[1] is not None)
    monkeypatch.setenv(DATABASE_URL_ENV, database_url)
    monkeypatch.setattr(logging.getLogger(), "handlers", [])  # the command installs its own

    result = CliRunner().invoke(cli, ["--config", str(config), "sinks", "status",
                                      "--format", "json"])

    archive, siem = (orjson.loads(line) for line in result.stdout.splitlines())
    assert result.exit_code == 1  # a sink is failing
    assert (archive["sink"], archive["type"], archive["last_event_id"], archive["lag"],
            archive["last_error"]) == ("archive", "file", 3, 0, None)
    assert (siem["sink"], siem["last_event_id"], siem["lag"]) == ("siem", 0, 3)
    assert siem["last_error"].startswith("ConnectionRefusedError: ")
