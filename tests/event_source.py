"""Real committed events for the tests of `tail` and the sinks: polls of a fake cluster
(tests.ontap_pages) through the real pipeline into the test database."""

from __future__ import annotations

from sqlalchemy import Engine

from collector.config import ClusterConfig, PasswordSource
from collector.db.store import HistoryStore
from tests.ontap_pages import session_record
from tests.test_pipeline import Poller


class EventSource:
    """Hosts log in and out of one cluster; each `poll` commits its events."""

    def __init__(self, engine: Engine, name: str = "lab") -> None:
        cluster = ClusterConfig(name=name, url="https://cluster1.example.com",
                                username="admin", password=PasswordSource("env", "LAB_PASSWORD"))
        self.poller = Poller(cluster, HistoryStore(engine))
        self.hosts: set[int] = set()

    async def poll(self, *, login: range | tuple[int, ...] = (),
                   logout: range | tuple[int, ...] = ()) -> tuple[str, ...]:
        """Log `login` hosts in and `logout` hosts out; return the kinds of events recorded."""
        self.hosts = (self.hosts | set(login)) - set(logout)
        report = await self.poller.poll(*(session_record(n) for n in sorted(self.hosts)))
        return report.event_kinds
