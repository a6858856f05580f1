"""`[[sinks]]` tables: where events are forwarded, validated with the config's messages.

```toml
[[sinks]]
name = "siem"
type = "syslog"            # syslog | webhook | file
address = "siem.example.com:6514"
transport = "tls"          # udp | tcp | tls
```

Secrets stay out of the file as they do for clusters: a webhook names the environment
variable that holds its token (`token_env`), read when the sink starts.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import urlsplit

from collector.config import _NAME, ConfigError, _Where

# RFC 5424 section 6.2.1
FACILITIES = {
    "kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6,
    "news": 7, "uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "audit": 13,
    "alert": 14, "clock": 15, **{f"local{n}": 16 + n for n in range(8)},
}  # fmt: skip

_COMMON_KEYS = {"name", "type", "batch_size"}
_KEYS = {
    "syslog": _COMMON_KEYS | {"address", "transport", "ca_file", "app_name", "facility", "timeout"},
    "webhook": _COMMON_KEYS
    | {"url", "headers", "token_env", "token_scheme", "format", "timeout", "ca_file", "verify"},
    "file": _COMMON_KEYS | {"path"},
}
_SECRET_HEADERS = {"authorization", "proxy-authorization", "x-api-key", "cookie"}
_PRINTABLE_ASCII = set(map(chr, range(33, 127)))  # RFC 5424 APP-NAME characters


@dataclass(frozen=True, slots=True)
class SyslogSink:
    type: ClassVar[str] = "syslog"
    name: str
    host: str
    port: int
    transport: str = "udp"  # udp | tcp | tls
    ca_file: Path | None = None
    app_name: str = "iscsi-audit"
    facility: int = FACILITIES["auth"]
    timeout: float = 10.0
    batch_size: int = 100


@dataclass(frozen=True, slots=True)
class WebhookSink:
    type: ClassVar[str] = "webhook"
    name: str
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    token_env: str | None = None
    token_scheme: str = "Bearer"
    format: str = "json"  # json (an array per batch) | splunk_hec
    timeout: float = 10.0
    ca_file: Path | None = None
    verify: bool = True
    batch_size: int = 100

    def request_headers(self) -> dict[str, str]:
        """The headers with the token read from the environment (never kept or logged)."""
        headers = dict(self.headers)
        if self.token_env is not None:
            token = os.environ.get(self.token_env)
            if not token:
                raise ConfigError(
                    f"sink {self.name}: environment variable {self.token_env}"
                    " (token_env) is not set or empty"
                )
            headers["Authorization"] = f"{self.token_scheme} {token}"
        return headers


@dataclass(frozen=True, slots=True)
class FileSink:
    type: ClassVar[str] = "file"
    name: str
    path: Path
    batch_size: int = 100


SinkConfig = SyslogSink | WebhookSink | FileSink


@dataclass(frozen=True, slots=True)
class _Item:
    """One [[sinks]] table with its position, for readers that name the key."""

    where: _Where
    table: Mapping[str, Any]
    at: str

    def error(self, key: str, problem: str) -> ConfigError:
        return self.where.error(f"{self.at}.{key}", problem)

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self.where.optional_str(self.table, f"{self.at}.{key}", key)
        return default if value is None else value

    def required(self, key: str) -> str:
        return self.where.required_str(self.table, self.at, key)

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise self.error(key, f"{value!r}: must be one of {', '.join(choices)}")
        return value

    def timeout(self) -> float:
        return self.where.duration(self.table, self.at, "timeout", 10.0, minimum=0.1)


def parse_sinks(items: list[Mapping[str, Any]], where: _Where) -> tuple[SinkConfig, ...]:
    sinks = tuple(_sink(_Item(where, item, f"sinks[{i}]")) for i, item in enumerate(items))
    seen: set[str] = set()
    for i, sink in enumerate(sinks):
        if sink.name in seen:
            raise where.error(f"sinks[{i}].name", f"{sink.name!r} is used twice")
        seen.add(sink.name)
    return sinks


def _sink(item: _Item) -> SinkConfig:
    kind = item.required("type")
    if kind not in _KEYS:
        raise item.error("type", f"{kind!r}: must be one of {', '.join(_KEYS)}")
    item.where.no_unknown_keys(item.table, item.at, _KEYS[kind])
    name = item.required("name")
    if not _NAME.fullmatch(name):
        raise item.error("name", "use letters, digits, '.', '_' and '-' (at most 63)")
    batch_size = item.where.integer(item.table, item.at, "batch_size", 100, 1, 10_000)
    if kind == "syslog":
        return _syslog(item, name, batch_size)
    if kind == "webhook":
        return _webhook(item, name, batch_size)
    return FileSink(name=name, path=_file_path(item), batch_size=batch_size)


def _syslog(item: _Item, name: str, batch_size: int) -> SyslogSink:
    host, port = _address(item, item.required("address"))
    transport = item.choice("transport", ("udp", "tcp", "tls"), "udp")
    ca_file = item.where.optional_path(item.table, item.at, "ca_file")
    if ca_file is not None and transport != "tls":
        raise item.error("ca_file", f'is for transport = "tls", not {transport!r}')
    app_name = item.text("app_name", "iscsi-audit") or ""
    if len(app_name) > 48 or not set(app_name) <= _PRINTABLE_ASCII:
        raise item.error("app_name", "at most 48 printable ASCII characters, no spaces")
    facility = item.choice("facility", tuple(FACILITIES), "auth")
    return SyslogSink(
        name=name,
        host=host,
        port=port,
        transport=transport,
        ca_file=ca_file,
        app_name=app_name,
        facility=FACILITIES[facility],
        timeout=item.timeout(),
        batch_size=batch_size,
    )


def _address(item: _Item, address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")  # [2001:db8::1]:514
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise item.error("address", f"{address!r}: expected host:port")
    return host, int(port)


def _webhook(item: _Item, name: str, batch_size: int) -> WebhookSink:
    url = item.required("url")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise item.error("url", f"{url!r} is not http(s)://host[:port]/path")
    if parts.username or parts.password:
        raise item.error("url", "credentials in the URL end up in logs; use token_env")
    verify = item.where.optional_bool(item.table, item.at, "verify", True)
    ca_file = item.where.optional_path(item.table, item.at, "ca_file")
    if ca_file is not None and not verify:
        raise item.error("ca_file", "has no effect with verify = false; remove one")
    return WebhookSink(
        name=name,
        url=url,
        headers=_headers(item),
        token_env=item.text("token_env"),
        token_scheme=item.text("token_scheme", "Bearer") or "Bearer",
        format=item.choice("format", ("json", "splunk_hec"), "json"),
        timeout=item.timeout(),
        ca_file=ca_file,
        verify=verify,
        batch_size=batch_size,
    )


def _headers(item: _Item) -> tuple[tuple[str, str], ...]:
    table = item.table.get("headers", {})
    if not isinstance(table, dict):
        raise item.error("headers", 'must be a table (headers = { "X-Source" = "lab" })')
    headers = []
    for header, value in table.items():
        if header.lower() in _SECRET_HEADERS:
            raise item.error(
                f"headers.{header}",
                "secrets never in the file; use token_env"
                " (and token_scheme) to send Authorization from the environment",
            )
        if not isinstance(value, str):
            raise item.error(f"headers.{header}", "must be a string")
        headers.append((header, value))
    return tuple(headers)


def _file_path(item: _Item) -> Path:
    path = item.where.resolve(item.required("path"))
    if not path.parent.is_dir():
        raise item.error("path", f"{path.parent}: no such directory")
    if path.is_dir():
        raise item.error("path", f"{path} is a directory; name a file")
    return path
