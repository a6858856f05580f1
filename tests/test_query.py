from __future__ import annotations

import orjson
import pytest
from click.testing import CliRunner
from sqlalchemy import Engine, text

from collector.cli import cli


@pytest.fixture
def history(database_url: str, engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    monkeypatch.setenv("ISCSI_AUDIT_DATABASE_URL", database_url)
    monkeypatch.delenv("ISCSI_AUDIT_CONFIG", raising=False)
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO iscsi_audit.polls (cluster_label, started_at, finished_at, outcome,"
            " page_count, rejected_count, event_count, error, collector) VALUES"
            " ('lab', '2026-11-03 02:00+00', '2026-11-03 02:00:01+00', 'failed', 0, 0, 0,"
            " 'HTTP 401, ONTAP error 6691623: User is not authorized', 'test:1')"))
    return engine


def query(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--log-level", "error", "query", *args])
    return result.exit_code, result.output


def test_query_prints_aligned_rows(history: Engine) -> None:
    code, output = query("SELECT cluster_name, outcome FROM iscsi_audit.poll_log")

    assert code == 0
    assert output.splitlines() == ["cluster_name  outcome", "------------  -------",
                                   "lab           failed", "(1 row)"]


def test_query_json_lines_and_csv(history: Engine) -> None:
    _, as_json = query("SELECT poll_id, error FROM iscsi_audit.poll_log", "--format", "json")
    _, as_csv = query("SELECT cluster_name, error FROM iscsi_audit.poll_log", "--format", "csv")

    assert orjson.loads(as_json) == {
        "poll_id": 1, "error": "HTTP 401, ONTAP error 6691623: User is not authorized"}
    assert as_csv.splitlines() == [
        "cluster_name,error", 'lab,"HTTP 401, ONTAP error 6691623: User is not authorized"']


def test_query_cannot_change_the_history(history: Engine) -> None:
    code, output = query("DELETE FROM iscsi_audit.polls")

    assert code == 1
    assert "cannot execute DELETE in a read-only transaction" in output
    with history.connect() as conn:
        assert conn.scalar(text("SELECT count(*) FROM iscsi_audit.polls")) == 1


def test_query_reports_bad_sql(history: Engine) -> None:
    code, output = query("SELECT nothing FROM iscsi_audit.poll_log")

    assert code == 1
    assert 'query failed: column "nothing" does not exist' in output
