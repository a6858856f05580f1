"""What many users build first (and what CloudQuery's append mode does): every poll appends
the whole snapshot, one row per session record with the poll's time. Used by the
benchmark as the storage baseline; it shares our fetch, so only storage differs."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from sqlalchemy import Engine, text

from collector.config import ClusterConfig
from collector.ontap.client import OntapClient


class NaiveCollector:
    def __init__(self, engine: Engine, cluster: ClusterConfig) -> None:
        self.engine = engine
        self.cluster = cluster

    def create(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(text("CREATE SCHEMA IF NOT EXISTS naive"))
            conn.execute(text("""
                CREATE TABLE IF NOT EXISTS naive.iscsi_sessions (
                    _sync_time timestamptz NOT NULL,
                    _cluster text NOT NULL,
                    svm_uuid text, target_portal_group text, tsih int, isid text,
                    initiator_name text, record jsonb NOT NULL)"""))
            conn.execute(text("CREATE INDEX IF NOT EXISTS iscsi_sessions_sync"
                              " ON naive.iscsi_sessions (_cluster, _sync_time)"))

    async def poll(self) -> int:
        password = self.cluster.password.read() if self.cluster.password else None
        records = []
        async with OntapClient(self.cluster, password) as client:
            async for page in client.session_pages():
                records.extend(orjson.loads(bytes(r)) for r in page.records)
        now = datetime.now(UTC)
        raw = self.engine.raw_connection()
        try:
            with raw.cursor() as cursor, cursor.copy(  # type: ignore[attr-defined]
                    "COPY naive.iscsi_sessions FROM STDIN") as copy:
                for r in records:
                    copy.write_row((now, self.cluster.name, r["svm"]["uuid"],
                                    r["target_portal_group"], r["tsih"], r["isid"],
                                    r["initiator"]["name"], orjson.dumps(r).decode()))
            raw.commit()
        finally:
            raw.close()
        return len(records)
