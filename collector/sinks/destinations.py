"""The I/O of each sink: send one batch of events, or raise.

A destination raises one of `DELIVERY_ERRORS` when a batch may not have arrived; the
runner then keeps its position and sends the batch again later. What "arrived" means
differs by transport:

- webhook: the server answered 2xx.
- file: the lines were written and fsync'ed.
- syslog over TCP or TLS: the bytes were written to a connection the receiver had not
  closed (syslog has no acknowledgement; a receiver that dies holding unread bytes can lose
  them).
- syslog over UDP: the datagrams were sent. UDP cannot tell, so "at least once" holds only
  as far as the network does; use TCP or TLS where that matters.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import httpx

from collector.db.feed import FeedEvent
from collector.sinks.config import FileSink, SinkConfig, SyslogSink, WebhookSink
from collector.sinks.formats import (
    json_array,
    json_lines,
    octet_counted,
    splunk_hec,
    syslog_message,
)


class DeliveryError(Exception):
    """The receiver refused a batch (for example an HTTP status other than 2xx)."""


# what a receiver being down or refusing looks like; anything else is a bug
DELIVERY_ERRORS: tuple[type[Exception], ...] = (OSError, httpx.HTTPError, DeliveryError)


class Destination(Protocol):
    async def deliver(self, events: Sequence[FeedEvent]) -> None: ...

    async def close(self) -> None: ...


def open_destination(sink: SinkConfig) -> Destination:
    if isinstance(sink, SyslogSink):
        return SyslogDatagrams(sink) if sink.transport == "udp" else SyslogStream(sink)
    if isinstance(sink, WebhookSink):
        return Webhook(sink)
    return JsonLinesFile(sink)


class _SyslogMessages:
    def __init__(self, sink: SyslogSink) -> None:
        self.sink = sink
        self.hostname = socket.gethostname()
        self.procid = str(os.getpid())

    def messages(self, events: Sequence[FeedEvent]) -> list[bytes]:
        return [
            syslog_message(
                e,
                facility=self.sink.facility,
                app_name=self.sink.app_name,
                hostname=self.hostname,
                procid=self.procid,
            )
            for e in events
        ]


class SyslogDatagrams(_SyslogMessages):
    """RFC 5426: one message per UDP datagram."""

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        await asyncio.to_thread(self._send, self.messages(events))

    def _send(self, messages: list[bytes]) -> None:
        family, kind, proto, _, address = socket.getaddrinfo(
            self.sink.host, self.sink.port, type=socket.SOCK_DGRAM
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(self.sink.timeout)
            for message in messages:
                sock.sendto(message, address)

    async def close(self) -> None:
        return None


class SyslogStream(_SyslogMessages):
    """RFC 6587 (TCP) or RFC 5425 (TLS): octet-counted messages on a kept-open connection."""

    def __init__(self, sink: SyslogSink) -> None:
        super().__init__(sink)
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        _, writer = await self._connection()
        try:
            writer.write(b"".join(octet_counted(m) for m in self.messages(events)))
            await asyncio.wait_for(writer.drain(), self.sink.timeout)
        except BaseException:
            await self.close()
            raise

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        # a receiver that restarted has closed our connection; writing to it would "succeed"
        if self._streams is not None and (
            self._streams[0].at_eof() or self._streams[1].is_closing()
        ):
            await self.close()
        if self._streams is None:
            self._streams = await asyncio.wait_for(
                asyncio.open_connection(
                    self.sink.host,
                    self.sink.port,
                    ssl=self._tls(),
                    server_hostname=self.sink.host if self.sink.transport == "tls" else None,
                ),
                self.sink.timeout,
            )
        return self._streams

    def _tls(self) -> ssl.SSLContext | None:
        if self.sink.transport != "tls":
            return None
        ca_file = str(self.sink.ca_file) if self.sink.ca_file else None
        return ssl.create_default_context(cafile=ca_file)

    async def close(self) -> None:
        if self._streams is None:
            return
        writer = self._streams[1]
        self._streams = None
        writer.close()
        # it is being dropped either way
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), self.sink.timeout)


class Webhook:
    """POST each batch as JSON; any answer but 2xx is a failure to retry."""

    def __init__(self, sink: WebhookSink) -> None:
        self.sink = sink
        self.hostname = socket.gethostname()
        verify: ssl.SSLContext | bool = sink.verify
        if sink.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(sink.ca_file))
        self.client = httpx.AsyncClient(
            timeout=sink.timeout, verify=verify, headers=sink.request_headers()
        )

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        if self.sink.format == "splunk_hec":
            body = splunk_hec(events, host=self.hostname)
        else:
            body = json_array(events)
        response = await self.client.post(
            self.sink.url, content=body, headers={"Content-Type": "application/json"}
        )
        if not response.is_success:
            raise DeliveryError(f"HTTP {response.status_code} from {self.sink.url}")

    async def close(self) -> None:
        await self.client.aclose()


class JsonLinesFile:
    """Append JSON lines and fsync; opened per batch so log rotation needs no signal."""

    def __init__(self, sink: FileSink) -> None:
        self.path: Path = sink.path

    async def deliver(self, events: Sequence[FeedEvent]) -> None:
        await asyncio.to_thread(self._append, json_lines(events))

    def _append(self, data: bytes) -> None:
        with self.path.open("ab") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())

    async def close(self) -> None:
        return None
