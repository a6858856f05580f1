"""The TOML configuration: parsed once, validated whole, every problem named by file and key.

Where it comes from: `--config PATH`, else `$ISCSI_AUDIT_CONFIG`, else `./iscsi-audit.toml`.
Secrets are never held in the config object: a cluster names where its password is
(`password_env`, `password_file` or `password_command`) and the password is read when a
poll needs it, so a rotated password is picked up without a restart.
"""

from __future__ import annotations

import difflib
import math
import os
import re
import shlex
import subprocess
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collector.sinks.config import SinkConfig

CONFIG_ENV = "ISCSI_AUDIT_CONFIG"
DATABASE_URL_ENV = "ISCSI_AUDIT_DATABASE_URL"
DEFAULT_CONFIG_PATH = Path("iscsi-audit.toml")

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # used with fullmatch
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_PASSWORD_COMMAND_TIMEOUT = 30.0


class ConfigError(Exception):
    """The configuration is unusable; the message names the file, the key and the problem."""


class CredentialError(Exception):
    """A password could not be read. The message never contains the secret."""


@dataclass(frozen=True, slots=True)
class PasswordSource:
    """Where a cluster's password lives; `read()` fetches it at the moment it is needed."""

    kind: str  # "env", "file" or "command"
    where: str

    def read(self) -> str:
        if self.kind == "env":
            value = os.environ.get(self.where)
            if not value:
                raise CredentialError(f"environment variable {self.where} is not set or empty")
            return value
        if self.kind == "file":
            return _read_password_file(Path(self.where))
        return _run_password_command(self.where)

    def describe(self) -> str:
        return f"password_{self.kind} {self.where}"


def _read_password_file(path: Path) -> str:
    try:
        password = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CredentialError(f"cannot read password_file {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CredentialError(f"password_file {path} is not UTF-8 text") from None
    if not password:
        raise CredentialError(f"password_file {path} is empty")
    return password


def _run_password_command(command: str) -> str:
    try:
        done = subprocess.run(
            shlex.split(command),
            capture_output=True,
            text=True,
            timeout=_PASSWORD_COMMAND_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise CredentialError(
            f"password_command timed out after {_PASSWORD_COMMAND_TIMEOUT:g}s"
        ) from None
    except (OSError, ValueError) as exc:
        # ValueError: unbalanced quotes (parse_config refuses them) or a NUL byte
        raise CredentialError(f"password_command failed to run: {type(exc).__name__}") from None
    if done.returncode != 0:
        # stderr may echo the secret in some helpers; report only the status
        raise CredentialError(f"password_command exited with status {done.returncode}")
    password = done.stdout.strip()
    if not password:
        raise CredentialError("password_command printed nothing")
    return password


@dataclass(frozen=True, slots=True)
class ClusterConfig:
    name: str
    url: str
    username: str | None = None
    password: PasswordSource | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    ca_file: Path | None = None
    verify: bool = True
    insecure_http: bool = False
    interval: float = 60.0
    # up to this many seconds added to each scheduled poll; None: a tenth of the interval
    jitter: float | None = None
    max_records: int = 1000
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retries: int = 3
    max_page_bytes: int = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class CollectorSettings:
    """The `[collector]` table: how `iscsi-audit run` schedules its polls."""

    concurrency: int = 8  # polls in flight at once, over all clusters
    max_backoff: float = 900.0  # cap on the delay before retrying a failing cluster
    jitter: float | None = None  # default for clusters; None: a tenth of each interval
    # open sessions, over all clusters, whose record digests `run` remembers between polls
    # (about 130 bytes each); a cluster that does not fit is parsed and read back whole
    remember_sessions: int = 1_000_000


@dataclass(frozen=True, slots=True)
class Config:
    path: Path | None
    database_url: str | None = None
    clusters: tuple[ClusterConfig, ...] = field(default_factory=tuple)
    collector: CollectorSettings = field(default_factory=CollectorSettings)
    sinks: tuple[SinkConfig, ...] = field(default_factory=tuple)

    def cluster(self, name: str) -> ClusterConfig:
        for cluster in self.clusters:
            if cluster.name == name:
                return cluster
        known = ", ".join(c.name for c in self.clusters) or "none"
        raise ConfigError(
            f"{_file_label(self.path)}: clusters: no cluster named {name!r} (configured: {known})"
        )


def _file_label(path: Path | None) -> str:
    return str(path) if path else "<config>"


def config_path(explicit: str | Path | None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG_PATH)


def load_config(path: Path, *, required: bool = True) -> Config:
    """Read and validate a config file. A missing file is an empty config unless `required`."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file (set --config or ${CONFIG_ENV})") from None
        return Config(path=None)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(document, path)


def parse_config(document: Mapping[str, Any], path: Path | None) -> Config:
    where = _Where(_file_label(path), path.parent if path is not None else None)
    where.no_unknown_keys(document, "", {"database", "clusters", "collector", "sinks"})
    database = where.table(document, "database")
    where.no_unknown_keys(database, "database", {"url"})
    collector = _collector(where.table(document, "collector"), where)
    clusters = tuple(
        _cluster(item, where, f"clusters[{i}]", collector)
        for i, item in enumerate(where.array_of_tables(document, "clusters"))
    )
    seen: set[str] = set()
    for i, cluster in enumerate(clusters):
        if cluster.name in seen:
            raise where.error(f"clusters[{i}].name", f"{cluster.name!r} is used twice")
        seen.add(cluster.name)
    url = where.optional_str(database, "database.url", "url")
    # imported here: collector.sinks builds on this module
    from collector.sinks.config import parse_sinks

    sinks = parse_sinks(where.array_of_tables(document, "sinks"), where)
    return Config(path=path, database_url=url, clusters=clusters, collector=collector, sinks=sinks)


def _collector(table: Mapping[str, Any], where: _Where) -> CollectorSettings:
    where.no_unknown_keys(
        table, "collector", {"concurrency", "max_backoff", "jitter", "remember_sessions"}
    )
    return CollectorSettings(
        concurrency=where.integer(table, "collector", "concurrency", 8, 1, 256),
        remember_sessions=where.integer(
            table, "collector", "remember_sessions", 1_000_000, 0, 100_000_000
        ),
        max_backoff=where.duration(table, "collector", "max_backoff", 900.0, minimum=1.0),
        jitter=where.duration(table, "collector", "jitter", 0.0, minimum=0.0)
        if "jitter" in table
        else None,
    )


_CLUSTER_KEYS = {
    "name",
    "url",
    "username",
    "password_env",
    "password_file",
    "password_command",
    "cert_file",
    "key_file",
    "ca_file",
    "verify",
    "insecure_http",
    "interval",
    "jitter",
    "max_records",
    "connect_timeout",
    "read_timeout",
    "retries",
    "max_page_bytes",
}


def _cluster(
    item: Mapping[str, Any], where: _Where, at: str, collector: CollectorSettings
) -> ClusterConfig:
    where.no_unknown_keys(item, at, _CLUSTER_KEYS)
    name = where.required_str(item, at, "name")
    if not _NAME.fullmatch(name):
        raise where.error(f"{at}.name", "use letters, digits, '.', '_' and '-' (at most 63)")
    insecure_http = where.optional_bool(item, at, "insecure_http", False)
    url = _cluster_url(where.required_str(item, at, "url"), insecure_http, where, f"{at}.url")
    cert_file = where.optional_path(item, at, "cert_file")
    key_file = where.optional_path(item, at, "key_file")
    if cert_file is not None and key_file is None:
        raise where.error(f"{at}.key_file", "missing (cert_file needs its key_file)")
    if key_file is not None and cert_file is None:
        raise where.error(f"{at}.cert_file", "missing (key_file needs its cert_file)")
    password = _password_source(item, where, at)
    username = where.optional_str(item, f"{at}.username", "username")
    if password is not None and username is None:
        raise where.error(f"{at}.username", f"missing (password_{password.kind} needs a username)")
    if username is not None and password is None:
        raise where.error(
            f"{at}.username",
            "has no password: add password_env, password_file or password_command"
            " (certificate auth needs no username)",
        )
    if cert_file is None and password is None:
        raise where.error(
            at,
            "no credentials: give username with password_env, password_file or"
            " password_command, or cert_file and key_file",
        )
    verify = where.optional_bool(item, at, "verify", True)
    ca_file = where.optional_path(item, at, "ca_file")
    if ca_file is not None and not verify:
        raise where.error(f"{at}.ca_file", "has no effect with verify = false; remove one")
    interval = where.duration(item, at, "interval", 60.0, minimum=1.0)
    return ClusterConfig(
        name=name,
        url=url,
        username=username,
        password=password,
        cert_file=cert_file,
        key_file=key_file,
        ca_file=ca_file,
        verify=verify,
        insecure_http=insecure_http,
        interval=interval,
        jitter=_jitter(item, where, at, interval, collector),
        max_records=where.integer(item, at, "max_records", 1000, 1, 10_000),
        connect_timeout=where.duration(item, at, "connect_timeout", 10.0, minimum=0.1),
        read_timeout=where.duration(item, at, "read_timeout", 60.0, minimum=0.1),
        retries=where.integer(item, at, "retries", 3, 0, 10),
        max_page_bytes=where.integer(item, at, "max_page_bytes", 64 * 1024 * 1024, 1024, 2**31),
    )


def _jitter(
    item: Mapping[str, Any], where: _Where, at: str, interval: float, collector: CollectorSettings
) -> float | None:
    if "jitter" not in item and collector.jitter is None:
        return None
    jitter = where.duration(item, at, "jitter", collector.jitter or 0.0, minimum=0.0)
    if jitter > interval:
        key = f"{at}.jitter" if "jitter" in item else "collector.jitter"
        raise where.error(key, f"{jitter:g}s is longer than the interval ({interval:g}s)")
    return jitter


def _cluster_url(url: str, insecure_http: bool, where: _Where, at: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise where.error(at, f"{url!r} is not https://host[:port]")
    if parts.scheme == "http" and not insecure_http:
        raise where.error(
            at,
            "http:// sends the password in clear; use https:// "
            "(or insecure_http = true for a lab or the simulator)",
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
        raise where.error(at, f"{url!r}: give only scheme, host and port")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise where.error(at, f"{url!r} has an invalid port") from None
    return f"{parts.scheme}://{parts.netloc}"


def _password_source(item: Mapping[str, Any], where: _Where, at: str) -> PasswordSource | None:
    given = [k for k in ("password_env", "password_file", "password_command") if k in item]
    if len(given) > 1:
        raise where.error(f"{at}.{given[1]}", f"give only one of {', '.join(given)}")
    if not given:
        return None
    key = given[0]
    value = where.required_str(item, at, key)
    if key == "password_command":
        try:
            shlex.split(value)
        except ValueError as exc:
            raise where.error(f"{at}.{key}", f"cannot split into words: {exc}") from None
    if key == "password_file":
        value = str(where.resolve(value))
    return PasswordSource(key.removeprefix("password_"), value)


@dataclass(frozen=True, slots=True)
class _Where:
    """Typed readers that name the file and the dotted key in every complaint."""

    file: str
    # relative paths in the file are relative to the file, as a reader of it expects,
    # not to wherever the collector happens to be started (systemd starts it in /)
    base: Path | None = None

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.file}: {key}: {problem}")

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return self.base / path if self.base is not None and not path.is_absolute() else path

    def no_unknown_keys(self, table: Mapping[str, Any], at: str, allowed: set[str]) -> None:
        for key in table:
            if key not in allowed:
                raise self.error(f"{at}.{key}" if at else key, _unknown_key_hint(key, allowed))

    def table(self, document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
        value = document.get(key, {})
        if not isinstance(value, dict):
            raise self.error(key, f"must be a table ([{key}])")
        return value

    def array_of_tables(self, document: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
        value = document.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.error(key, f"must be an array of tables ([[{key}]])")
        return value

    def required_str(self, item: Mapping[str, Any], at: str, key: str) -> str:
        value = self.optional_str(item, f"{at}.{key}", key)
        if value is None:
            raise self.error(f"{at}.{key}", "missing")
        return value

    def optional_str(self, item: Mapping[str, Any], dotted: str, key: str) -> str | None:
        value = item.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise self.error(dotted, "must be a non-empty string")
        return value

    def optional_path(self, item: Mapping[str, Any], at: str, key: str) -> Path | None:
        value = self.optional_str(item, f"{at}.{key}", key)
        if value is None:
            return None
        path = self.resolve(value)
        if not path.is_file():
            raise self.error(f"{at}.{key}", f"{path}: no such file")
        return path

    def optional_bool(self, item: Mapping[str, Any], at: str, key: str, default: bool) -> bool:
        value = item.get(key, default)
        if not isinstance(value, bool):
            quoted = " (without quotes)" if isinstance(value, str) else ""
            raise self.error(f"{at}.{key}", f"{value!r}: must be true or false{quoted}")
        return value

    def integer(
        self, item: Mapping[str, Any], at: str, key: str, default: int, low: int, high: int
    ) -> int:
        value = item.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise self.error(f"{at}.{key}", f"{value!r}: must be an integer from {low} to {high}")
        return value

    def duration(
        self, item: Mapping[str, Any], at: str, key: str, default: float, minimum: float
    ) -> float:
        value = item.get(key, default)
        seconds = parse_duration(value)
        if seconds is None or seconds < minimum:
            raise self.error(
                f"{at}.{key}",
                f'{value!r}: expected a duration like "60s", "5m" or "500ms"'
                f" of at least {minimum:g}s",
            )
        return seconds


def _unknown_key_hint(key: str, allowed: set[str]) -> str:
    if key == "password":
        return (
            "never in the file (files get copied, backed up and committed);"
            " use password_env, password_file or password_command"
        )
    close = difflib.get_close_matches(key, sorted(allowed), n=1)
    if close:
        return f"unknown key; did you mean {close[0]}?"
    return f"unknown key (allowed: {', '.join(sorted(allowed))})"


def parse_duration(value: object) -> float | None:
    """'90s', '5m', '1h', '250ms' or a number of seconds; None when it is none of these."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        # TOML allows inf and nan; neither is a duration
        return float(value) if math.isfinite(value) else None
    if not isinstance(value, str):
        return None
    match = _DURATION.match(value)
    if not match:
        return None
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
