"""What the sinks send, as bytes: pure functions of the events, no I/O.

Syslog messages follow RFC 5424:

    <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [iscsi-audit@32473 ...] MSG

MSGID is the event kind, the structured data carries the fields a SIEM filters on, and
MSG is the whole event as JSON. MSG is sent as MSG-ANY, without the UTF-8 BOM the RFC
allows, because JSON parsers downstream reject a BOM. Stream transports (TCP, TLS) frame
each message by octet counting (RFC 6587 section 3.4.1, as RFC 5425 does for TLS).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC

import orjson

from collector.db.feed import FeedEvent

# 32473 is the private enterprise number reserved for documentation (RFC 5612)
SD_ID = "iscsi-audit@32473"
SEVERITY_NOTICE = 5  # normal but significant: a login or logout is worth an auditor's eye
NILVALUE = "-"


def syslog_message(
    event: FeedEvent, *, facility: int, app_name: str, hostname: str, procid: str
) -> bytes:
    """One RFC 5424 message for an event."""
    header = " ".join(
        (
            f"<{facility * 8 + SEVERITY_NOTICE}>1",
            _timestamp(event),
            _header_field(hostname, 255),
            _header_field(app_name, 48),
            _header_field(procid, 128),
            _header_field(event.kind, 32),
        )
    )
    return f"{header} {structured_data(event)} ".encode() + orjson.dumps(event.as_dict())


def structured_data(event: FeedEvent) -> str:
    """The SD-ELEMENT with the event's identifying fields; absent ones are left out."""
    params = {
        "event_id": event.event_id,
        "cluster": event.cluster,
        "svm": event.svm,
        "initiator": event.initiator,
        "isid": event.isid,
        "tsih": event.tsih,
        "tpg": event.target_portal_group,
        "poll_id": event.poll_id,
        "occurred_after": event.occurred_after.isoformat() if event.occurred_after else None,
    }
    pairs = "".join(
        f' {name}="{escape_param(str(value))}"'
        for name, value in params.items()
        if value is not None
    )
    return f"[{SD_ID}{pairs}]"


def escape_param(value: str) -> str:
    """PARAM-VALUE escaping (RFC 5424 section 6.3.3): '"', '\\' and ']' get a backslash."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def octet_counted(message: bytes) -> bytes:
    """RFC 6587 octet-counting frame: the length, a space, the message."""
    return b"%d %s" % (len(message), message)


def _timestamp(event: FeedEvent) -> str:
    # the event's own time, in UTC with microseconds (the most RFC 5424 allows)
    moment = event.observed_at.astimezone(UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _header_field(value: str, limit: int) -> str:
    # header fields are PRINTUSASCII without spaces; anything else would break parsing
    cleaned = "".join(c for c in value if "!" <= c <= "~")[:limit]
    return cleaned or NILVALUE


def json_lines(events: Sequence[FeedEvent]) -> bytes:
    """One JSON object per line (the file sink)."""
    return b"".join(orjson.dumps(e.as_dict()) + b"\n" for e in events)


def json_array(events: Sequence[FeedEvent]) -> bytes:
    """A JSON array of events (the webhook's default body)."""
    return orjson.dumps([e.as_dict() for e in events])


def splunk_hec(events: Sequence[FeedEvent], *, host: str) -> bytes:
    """Splunk HTTP Event Collector batch: concatenated event objects, not an array."""
    return b"".join(
        orjson.dumps(
            {
                "time": e.observed_at.timestamp(),
                "host": host,
                "source": "iscsi-audit",
                "sourcetype": "iscsi-audit:event",
                "event": e.as_dict(),
            }
        )
        for e in events
    )
