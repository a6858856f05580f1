"""Alembic environment: runs against the connection `collector.db.database` hands it, or
against $ISCSI_AUDIT_DATABASE_URL when run by the `alembic` command."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection, create_engine, text

from collector.db.models import SCHEMA, Base

config = context.config
target_metadata = Base.metadata


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # only our schema: a shared database may hold anything else
    if type_ == "schema":
        return name == SCHEMA
    return True


def run(connection: Connection) -> None:
    # the version table lives in our schema, so the schema must exist before Alembic starts
    connection.execute(text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        include_schemas=True,
        include_name=include_name,
        version_table_schema=SCHEMA,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def main() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run(connection)
        return
    url = os.environ.get("ISCSI_AUDIT_DATABASE_URL")
    if not url:
        raise SystemExit("set ISCSI_AUDIT_DATABASE_URL to run alembic directly")
    with create_engine(url).connect() as conn:
        run(conn)
        conn.commit()


main()
