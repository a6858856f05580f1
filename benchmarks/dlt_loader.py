"""dlt (PyPI `dlt`), the general-purpose loader a user might pick instead: the sessions
with their nested connections, merged as slowly changing dimension type 2 (scd2), one
pipeline run per poll. It shares our fetch, so only what happens after it differs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from collector.config import ClusterConfig
from collector.ontap.client import OntapClient


class DltLoader:
    def __init__(self, url: str, cluster: ClusterConfig, workdir: Path) -> None:
        import dlt
        from sqlalchemy.engine import make_url

        self.cluster = cluster
        parsed = make_url(url)
        if not parsed.host:
            raise SystemExit("dlt needs a server on TCP (the embedded one has only a socket):"
                             " pass --database-url postgresql://user@host:port/db")
        # dlt insists on a password; under trust authentication any one will do
        credentials = parsed.set(drivername="postgresql", password=parsed.password or "trust")
        credentials = credentials.render_as_string(hide_password=False)
        self.pipeline = dlt.pipeline(
            pipeline_name="iscsi_audit_bench",
            destination=dlt.destinations.postgres(credentials=credentials),
            dataset_name="dlt_iscsi",
            pipelines_dir=str(workdir),
            progress=None,
        )

    async def fetch(self) -> list[dict[str, Any]]:
        import orjson

        password = self.cluster.password.read() if self.cluster.password else None
        records: list[dict[str, Any]] = []
        async with OntapClient(self.cluster, password) as client:
            async for page in client.session_pages():
                records.extend(orjson.loads(bytes(r)) for r in page.records)
        return records

    async def poll(self) -> None:
        self.load(await self.fetch())

    def load(self, records: list[dict[str, Any]]) -> None:
        import dlt

        self.pipeline.run(dlt.resource(
            records, name="iscsi_sessions",
            write_disposition={"disposition": "merge", "strategy": "scd2"}))
