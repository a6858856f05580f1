"""What the collector asks ONTAP for and how it reads the answers. Pure: no I/O.

Requests are deterministic (fields sorted) so that two polls of one cluster send the same
query, and a recorded page can be replayed in a test byte for byte.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

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
    """One page of a collection: its records (raw) and the opaque link to the next page."""

    records: list[Any]
    next_href: str | None


class EnvelopeError(ValueError):
    """A JSON body that is not the shape ONTAP answers with."""


def parse_page(body: Any) -> Page:
    if not isinstance(body, Mapping):
        raise EnvelopeError("expected a JSON object with records")
    records = body.get("records")
    if records is None and body.get("num_records") == 0:
        records = []
    if not isinstance(records, list):
        raise EnvelopeError("no records list in the response")
    return Page(records, _next_href(body))


def _next_href(body: Mapping[str, Any]) -> str | None:
    links = body.get("_links")
    if links is None:
        return None
    if not isinstance(links, Mapping):
        raise EnvelopeError("_links is not an object")
    next_link = links.get("next")
    if next_link is None:
        return None
    href = next_link.get("href") if isinstance(next_link, Mapping) else None
    if not isinstance(href, str) or not href:
        raise EnvelopeError("_links.next has no href")
    return href


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
