"""Raw ONTAP session records -> validated, immutable records keyed by lifetime identity.

Pure: no clock, no I/O. The fetcher hands pages of decoded JSON to a `SnapshotBuilder`;
the builder keeps the valid records and the rejected ones (raw, with the reason) and
produces a `Snapshot`.

Identity follows DESIGN.md: `{svm.uuid}/{tpgroup}/{tsih}` only names a session *now*;
its lifetime is that path plus the ISID and the initiator name, so a reused TSIH with
another initiator or ISID is another session.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import sys
from collections.abc import Container, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson
from typing_extensions import Buffer


class SessionKey(NamedTuple):
    """The lifetime identity of an iSCSI session within one cluster.

    A NamedTuple, not a dataclass: a poll of 100,000 sessions hashes and compares keys in
    set operations, and tuples do that in C.
    """

    svm_uuid: str
    target_portal_group: str
    tsih: int
    isid: str
    initiator_name: str

    @property
    def path(self) -> str:
        """ONTAP's path key, `{svm.uuid}/{tpgroup}/{tsih}` (not a lifetime identity)."""
        return f"{self.svm_uuid}/{self.target_portal_group}/{self.tsih}"


@dataclass(frozen=True, slots=True)
class Interface:
    """The LIF at the target end of a connection."""

    uuid: str
    name: str | None
    address: str | None
    port: int | None


@dataclass(frozen=True, slots=True)
class Connection:
    """One TCP connection of a session (MC/S sessions have several, by `cid`)."""

    cid: int
    authentication_type: str | None
    initiator_address: str | None
    initiator_port: int | None
    interface: Interface | None


@dataclass(frozen=True, slots=True, order=True)
class IgroupRef:
    uuid: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Session:
    """One observed session with everything the audit trail keeps about it."""

    key: SessionKey
    svm_name: str | None
    target_portal_group_tag: int | None
    initiator_alias: str | None
    initiator_comment: str | None
    igroups: tuple[IgroupRef, ...]
    connections: tuple[Connection, ...]

    def connection(self, cid: int) -> Connection | None:
        return next((c for c in self.connections if c.cid == cid), None)


@dataclass(frozen=True, slots=True)
class RejectedRecord:
    """A record that failed validation, kept as ONTAP sent it."""

    page: int
    reason: str
    raw: Any


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The sessions seen during one walk of the collection, and what was rejected.

    A walk told which record digests a collector remembers (`SnapshotBuilder(known)`)
    parses only the other records: `sessions` then holds the records that are new or
    changed, and `unchanged` the remembered digests that were seen again. Without `known`,
    `sessions` is every session of the walk and `unchanged` is empty.
    """

    sessions: Mapping[SessionKey, Session]
    rejected: tuple[RejectedRecord, ...] = ()
    pages: int = 0
    records_seen: int = 0
    # the digest of the raw record each session was parsed from (what a collector remembers)
    digests: Mapping[SessionKey, bytes] = field(default_factory=dict)
    # remembered digests seen again, with the position in the walk of their last sighting
    unchanged: Mapping[bytes, int] = field(default_factory=dict)
    # the position in the walk of the record each session was parsed from
    positions: Mapping[SessionKey, int] = field(default_factory=dict)
    complete: bool = True  # every record parsed: `sessions` is the whole walk


class InvalidRecord(ValueError):
    """A record does not have the shape of an ONTAP iSCSI session."""


_blake2b = hashlib.blake2b


class SnapshotBuilder:
    """Accumulates the raw records of one walk, page by page, into a `Snapshot`.

    Records arrive as their raw JSON bytes and each gets a 16-byte BLAKE2b digest. A
    record whose digest is in `known` (the digests a collector kept from its last poll)
    is not parsed: most records of a poll are unchanged, so most of the work is one digest
    per record.

    The same session on two pages (records move between pages on a busy cluster) is one
    session; the later page wins, since it is the fresher view. Positions in the walk are
    kept so that the store can apply the same rule to a remembered record.
    """

    def __init__(self, known: Container[bytes] | None = None) -> None:
        self._known = known
        self._sessions: dict[SessionKey, Session] = {}
        self._digests: dict[SessionKey, bytes] = {}
        self._positions: dict[SessionKey, int] = {}
        self._unchanged: dict[bytes, int] = {}
        self._rejected: list[RejectedRecord] = []
        self._pages = 0
        self._records = 0

    def add_page(self, records: Sequence[Buffer]) -> None:
        self._pages += 1
        # the loop runs once per record of a 100,000-session cluster: names kept local
        known, unchanged, blake2b = self._known or (), self._unchanged, _blake2b
        sessions, digests, positions = self._sessions, self._digests, self._positions
        position = self._records
        for raw in records:
            position += 1
            digest = blake2b(raw, digest_size=16).digest()
            if digest in known:
                unchanged[digest] = position
                continue
            session = self._parse(raw)
            if session is not None:
                key = session.key
                sessions[key], digests[key], positions[key] = session, digest, position
        self._records = position

    def _parse(self, raw: Buffer) -> Session | None:
        record = orjson.loads(bytes(raw))
        try:
            return parse_session(record)
        except InvalidRecord as exc:
            self._rejected.append(RejectedRecord(self._pages, str(exc), record))
            return None

    def build(self) -> Snapshot:
        # a builder serves one walk: its dicts are handed over, not copied
        return Snapshot(
            self._sessions,
            tuple(self._rejected),
            self._pages,
            self._records,
            self._digests,
            self._unchanged,
            self._positions,
            complete=self._known is None,
        )


def parse_session(raw: Any) -> Session:
    """Validate one raw record; raise `InvalidRecord` naming the field and the problem."""
    record = _mapping(raw, "record")
    svm = _mapping(record.get("svm"), "svm")
    initiator = _mapping(record.get("initiator"), "initiator")
    key = SessionKey(
        svm_uuid=sys.intern(_required_str(svm, "uuid", "svm.uuid")),
        target_portal_group=sys.intern(
            _required_str(record, "target_portal_group", "target_portal_group")
        ),
        tsih=_required_int(record, "tsih", "tsih"),
        isid=_required_str(record, "isid", "isid"),
        initiator_name=_required_str(initiator, "name", "initiator.name"),
    )
    return Session(
        key=key,
        svm_name=_shared(_optional_str(svm, "name", "svm.name")),
        target_portal_group_tag=_optional_int(
            record, "target_portal_group_tag", "target_portal_group_tag"
        ),
        initiator_alias=_optional_str(initiator, "alias", "initiator.alias"),
        initiator_comment=_optional_str(initiator, "comment", "initiator.comment"),
        igroups=_igroups(record.get("igroups")),
        connections=_connections(record.get("connections")),
    )


def _igroups(raw: Any) -> tuple[IgroupRef, ...]:
    groups = {}
    for i, item in enumerate(_optional_list(raw, "igroups")):
        where = f"igroups[{i}]"
        group = _mapping(item, where)
        ref = _shared_igroup(
            _required_str(group, "uuid", f"{where}.uuid"),
            _optional_str(group, "name", f"{where}.name"),
        )
        groups[ref.uuid] = ref
    return tuple(sorted(groups.values()))


def _connections(raw: Any) -> tuple[Connection, ...]:
    by_cid: dict[int, Connection] = {}
    for i, item in enumerate(_optional_list(raw, "connections")):
        connection = _connection(_mapping(item, f"connections[{i}]"), f"connections[{i}]")
        if connection.cid in by_cid:
            raise InvalidRecord(f"connections[{i}].cid: {connection.cid} appears twice")
        by_cid[connection.cid] = connection
    return tuple(by_cid[cid] for cid in sorted(by_cid))


def _connection(item: Mapping[str, Any], where: str) -> Connection:
    # ONTAP documents chap and none; a value a later release adds is kept as sent, not
    # rejected, so that one new word cannot turn every poll partial
    auth = _optional_str(item, "authentication_type", f"{where}.authentication_type")
    address = _optional_mapping(item.get("initiator_address"), f"{where}.initiator_address")
    return Connection(
        cid=_required_int(item, "cid", f"{where}.cid"),
        authentication_type=auth,
        initiator_address=_optional_ip(address, f"{where}.initiator_address.address"),
        initiator_port=_optional_port(address, f"{where}.initiator_address.port"),
        interface=_interface(item.get("interface"), f"{where}.interface"),
    )


def _interface(raw: Any, where: str) -> Interface | None:
    item = _optional_mapping(raw, where)
    if not item:
        return None
    ip = _optional_mapping(item.get("ip"), f"{where}.ip")
    return _shared_interface(
        _required_str(item, "uuid", f"{where}.uuid"),
        _optional_str(item, "name", f"{where}.name"),
        _optional_ip(ip, f"{where}.ip.address"),
        _optional_port(ip, f"{where}.ip.port"),
    )


# A fleet's sessions name a few SVMs, LIFs and igroups many thousand times: one shared
# object each keeps a collector's memory to its sessions, not to their repetitions.


def _shared(text: str | None) -> str | None:
    return sys.intern(text) if text is not None else None


@functools.lru_cache(maxsize=1 << 14)
def _shared_interface(
    uuid: str, name: str | None, address: str | None, port: int | None
) -> Interface:
    return Interface(uuid, name, address, port)


@functools.lru_cache(maxsize=1 << 14)
def _shared_igroup(uuid: str, name: str | None) -> IgroupRef:
    return IgroupRef(uuid, name)


# --- field readers: each names the dotted field it complains about ---------------------


def _mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InvalidRecord(f"{where}: expected an object, got {_kind(value)}")
    return value


def _optional_mapping(value: Any, where: str) -> Mapping[str, Any]:
    return {} if value is None else _mapping(value, where)


def _optional_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidRecord(f"{where}: expected a list, got {_kind(value)}")
    return value


def _required_str(record: Mapping[str, Any], name: str, where: str) -> str:
    value = _optional_str(record, name, where)
    if not value:
        raise InvalidRecord(f"{where}: missing")
    return value


def _optional_str(record: Mapping[str, Any], name: str, where: str) -> str | None:
    value = record.get(name)
    if value is None or isinstance(value, str):
        return value
    raise InvalidRecord(f"{where}: expected a string, got {_kind(value)}")


def _required_int(record: Mapping[str, Any], name: str, where: str) -> int:
    value = _optional_int(record, name, where)
    if value is None:
        raise InvalidRecord(f"{where}: missing")
    return value


def _optional_int(record: Mapping[str, Any], name: str, where: str) -> int | None:
    value = record.get(name)
    # bool is an int to Python, never to ONTAP
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    raise InvalidRecord(f"{where}: expected an integer, got {_kind(value)}")


def _optional_port(record: Mapping[str, Any], where: str) -> int | None:
    port = _optional_int(record, "port", where)
    if port is not None and not 0 <= port <= 65535:
        raise InvalidRecord(f"{where}: {port} is not a TCP port")
    return port


def _optional_ip(record: Mapping[str, Any], where: str) -> str | None:
    text = _optional_str(record, "address", where)
    if text is None:
        return None
    normal = _normal_ip(text)
    if normal is None:
        raise InvalidRecord(f"{where}: {text!r} is not an IP address")
    return normal


@functools.lru_cache(maxsize=1 << 16)
def _normal_ip(text: str) -> str | None:
    """Compressed form (equal addresses compare equal), or None; cached, as LIF and host
    addresses repeat across sessions and polls."""
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
