"""The per-cluster hash chain over audit events. Pure.

Each event's hash covers its content and the previous event's hash, so removing, editing
or reordering an event breaks every hash after it. The content is canonical JSON (sorted
keys, UTC timestamps), so the same event hashes the same when read back from PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from collector.snapshot import SessionKey

GENESIS = bytes(32)


def event_hash(
    prev_hash: bytes,
    *,
    cluster_uuid: str,
    kind: str,
    observed_at: datetime,
    occurred_after: datetime | None,
    key: SessionKey | None,
    details: Mapping[str, Any],
) -> bytes:
    content = {
        "cluster": cluster_uuid,
        "kind": kind,
        "observed_at": _utc(observed_at),
        "occurred_after": _utc(occurred_after) if occurred_after else None,
        "session": key._asdict() if key is not None else None,
        "details": details,
    }
    return hashlib.sha256(prev_hash + orjson.dumps(content, option=orjson.OPT_SORT_KEYS)).digest()


def _utc(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()
