"""The thin path: one cluster, one page, one event, in the real database."""

from __future__ import annotations

from sqlalchemy import Engine, text

from collector.config import ClusterConfig, PasswordSource
from collector.db.store import HistoryStore
from collector.diff import PollOutcome
from collector.pipeline import poll_cluster
from tests.ontap_pages import SEED_RECORD, FakeOntap


def cluster_config(monkeypatch, name: str = "lab") -> ClusterConfig:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return ClusterConfig(name=name, url="https://cluster1.example.com", username="admin",
                         password=PasswordSource("env", "LAB_PASSWORD"))


async def test_seed_record_is_recorded_as_a_connect(monkeypatch, store: HistoryStore,
                                                    engine: Engine) -> None:
    ontap = FakeOntap(pages=[[SEED_RECORD]])

    report = await poll_cluster(cluster_config(monkeypatch), store, transport=ontap.transport())

    assert report.outcome is PollOutcome.OK
    assert report.event_kinds == ("connect",)
    with engine.connect() as conn:
        row = conn.execute(text(
            "SELECT cluster_name, kind, svm_name, initiator_name, isid, tsih, target_portal_group"
            " FROM iscsi_audit.session_events")).one()
    assert tuple(row) == ("lab", "connect", "svm1", "iqn.1992-01.example.com:string",
                          "61:62:63:64:65:00", 0, "tpgroup1")
