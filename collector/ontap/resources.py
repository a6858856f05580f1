"""What the collector asks ONTAP for and how it reads the answers. Pure: no I/O.

Requests are deterministic (fields sorted) so that two polls of one cluster send the same
query, and a recorded page can be replayed in a test byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

CLUSTER_PATH = "/api/cluster"
CLUSTER_FIELDS = ("name", "uuid", "version")
SESSIONS_PATH = "/api/protocols/san/iscsi/sessions"

# Every field of the session record (API_NOTES.md). Named, not `**`: `**` may also pull
# expensive fields a newer release adds, and the answer would change under us.
SESSION_FIELDS = tuple(
    sorted(
        (
            "connections",
            "igroups",
            "initiator",
            "isid",
            "svm",
            "target_portal_group",
            "target_portal_group_tag",
            "tsih",
        )
    )
)

JSON = "application/json"


def fields_param(fields: tuple[str, ...]) -> str:
    return ",".join(sorted(fields))


def sessions_query(max_records: int) -> dict[str, str]:
    return {"fields": fields_param(SESSION_FIELDS), "max_records": str(max_records)}


def cluster_query() -> dict[str, str]:
    return {"fields": fields_param(CLUSTER_FIELDS)}


@dataclass(frozen=True, slots=True)
class ClusterIdentity:
    uuid: str
    name: str
    version: str | None


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a collection: each record's raw JSON, and the opaque next link."""

    records: list[msgspec.Raw]
    next_href: str | None


class EnvelopeError(ValueError):
    """A body that is not the shape ONTAP answers with."""


class NotJSON(EnvelopeError):
    """A body that is not JSON at all."""


class _Href(msgspec.Struct):
    href: str | None = None


class _Links(msgspec.Struct):
    next: _Href | None = None


class _PageEnvelope(msgspec.Struct):
    # records stay raw: the snapshot digests each one and parses only what it has not seen
    records: list[msgspec.Raw] | None = None
    num_records: int | None = None
    links: _Links | None = msgspec.field(name="_links", default=None)


_PAGE = msgspec.json.Decoder(_PageEnvelope)


def parse_page(body: bytes) -> Page:
    """Split a collection page into raw records and its next link, checking the envelope."""
    try:
        envelope = _PAGE.decode(body)
    except msgspec.ValidationError as exc:
        raise EnvelopeError(_envelope_problem(str(exc))) from None
    except msgspec.DecodeError as exc:
        raise NotJSON(f"not JSON ({exc})") from None
    records = envelope.records
    if records is None:
        if envelope.num_records != 0:
            raise EnvelopeError("no records list in the response")
        records = []
    next_link = envelope.links.next if envelope.links else None
    if next_link is not None and not next_link.href:
        raise EnvelopeError("_links.next has no href")
    return Page(records, next_link.href if next_link else None)


def _envelope_problem(message: str) -> str:
    if " - at `" not in message:  # msgspec names no path for the top level
        return "expected a JSON object with records"
    return f"not ONTAP's envelope: {message}"


def parse_cluster(body: Any) -> ClusterIdentity:
    if not isinstance(body, Mapping):
        raise EnvelopeError("expected a JSON object")
    uuid, name = body.get("uuid"), body.get("name")
    if not isinstance(uuid, str) or not uuid:
        raise EnvelopeError("cluster record has no uuid")
    if not isinstance(name, str) or not name:
        raise EnvelopeError("cluster record has no name")
    version = body.get("version")
    full = version.get("full") if isinstance(version, Mapping) else None
    return ClusterIdentity(uuid, name, full if isinstance(full, str) else None)


def describe_error(status: int, reason: str, body: Any) -> str:
    """`HTTP 403, ONTAP error 6: permission denied` from ONTAP's error envelope, if any."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if isinstance(error, Mapping) and isinstance(error.get("message"), str):
        code = error.get("code")
        target = error.get("target")
        text = f"HTTP {status}, ONTAP error {code}: {error['message']}"
        return f"{text} (target {target})" if isinstance(target, str) and target else text
    return f"HTTP {status} {reason}".rstrip()
