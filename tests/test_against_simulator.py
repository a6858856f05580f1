"""The collector against the bundled ONTAP simulator: a realistic world with churn,
multipath, MC/S, IPv6 and faults, polled through the real client into a real PostgreSQL.
After every ok poll the history's open sessions must be exactly the world's."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from collector.config import ClusterConfig, PasswordSource
from collector.db.memory import ClusterMemory
from collector.db.store import HistoryStore
from collector.diff import PollOutcome
from collector.ontap.client import RetryPolicy
from collector.pipeline import PollReport, poll_cluster
from collector.simulator import SESSIONS, Fault, SimulatorApp, World, create_app

PASSWORD = "sim-secret"
T0 = datetime(2026, 12, 1, tzinfo=UTC)


class SimulatedFleet:
    """One simulated cluster, polled once per simulated minute."""

    def __init__(self, store: HistoryStore, *, sessions: int, churn: float, seed: int,
                 memory: ClusterMemory | None = None) -> None:
        self.world = World.generate(clusters=1, sessions=sessions, seed=seed,
                                    churn_per_minute=churn)
        self.app: SimulatorApp = create_app(self.world, password=PASSWORD)
        self.store = store
        self.cluster = ClusterConfig(
            name="sim-a", url=self.app.base_url(0), insecure_http=True, username="admin",
            password=PasswordSource("env", "SIM_PASSWORD"), max_records=97)
        self.minute = 0
        self.memory = memory

    async def poll(self) -> PollReport:
        async def no_sleep(seconds: float) -> None:
            return None

        moment = T0 + timedelta(minutes=self.minute)
        return await poll_cluster(self.cluster, self.store,
                                  transport=httpx.ASGITransport(app=self.app),
                                  retry=RetryPolicy(retries=1, sleep=no_sleep),
                                  clock=lambda: moment, memory=self.memory)

    def advance(self, minutes: int = 1) -> None:
        self.world.advance(60.0 * minutes)
        self.minute += minutes

    def world_sessions(self) -> set[tuple[Any, ...]]:
        cluster = self.world.clusters[0]
        return {(k.svm_uuid, k.tpgroup, k.tsih, s.isid, s.initiator)
                for k, s in cluster.sessions.items()}


def open_sessions(engine: Engine) -> set[tuple[Any, ...]]:
    with engine.connect() as conn:
        return {tuple(r) for r in conn.execute(text(
            "SELECT v.uuid::text, s.target_portal_group, s.tsih, s.isid, s.initiator_name"
            " FROM iscsi_audit.sessions s JOIN iscsi_audit.svms v USING (svm_id)"
            " WHERE s.ended_at IS NULL"))}


@pytest.fixture(params=["fresh", "remembering"])
def fleet(request: pytest.FixtureRequest, store: HistoryStore,
          monkeypatch: pytest.MonkeyPatch) -> SimulatedFleet:
    """A collector that starts afresh each poll (`collect --once`), and one that keeps
    what it parsed and read between polls (`run`): both must record the same history."""
    monkeypatch.setenv("SIM_PASSWORD", PASSWORD)
    memory = ClusterMemory() if request.param == "remembering" else None
    return SimulatedFleet(store, sessions=400, churn=40.0, seed=11, memory=memory)


async def test_history_tracks_a_churning_world_poll_after_poll(fleet: SimulatedFleet,
                                                               engine: Engine) -> None:
    for _ in range(8):
        report = await fleet.poll()
        assert report.outcome is PollOutcome.OK
        assert open_sessions(engine) == fleet.world_sessions()
        fleet.advance()

    with engine.connect() as conn:
        kinds = dict(conn.execute(text(
            "SELECT kind, count(*) FROM iscsi_audit.events GROUP BY kind")).all())
    assert kinds["connect"] > 400 and kinds["disconnect"] > 0


async def test_a_fault_mid_walk_fails_the_poll_and_recovery_catches_up(
        fleet: SimulatedFleet, engine: Engine) -> None:
    await fleet.poll()
    fleet.advance(3)
    fleet.app.inject(Fault.server_error(503, endpoint=SESSIONS, page=3, times=None))

    failed = await fleet.poll()
    fleet.app.faults(0).clear()
    fleet.advance()
    recovered = await fleet.poll()

    assert failed.outcome is PollOutcome.FAILED and "page 3" in (failed.error or "")
    assert recovered.outcome is PollOutcome.OK
    assert open_sessions(engine) == fleet.world_sessions()


# times=2: the page fails on the client's retry too
@pytest.mark.parametrize("fault", [Fault.reset(endpoint=SESSIONS, page=2, times=2),
                                   Fault.truncated_json(endpoint=SESSIONS, page=2, times=2)])
async def test_broken_pages_fail_the_poll_and_close_nothing(fleet: SimulatedFleet,
                                                            engine: Engine, fault) -> None:
    await fleet.poll()
    before = open_sessions(engine)
    fleet.world.clusters[0].logout(next(iter(fleet.world.clusters[0].sessions)))
    fleet.app.inject(fault)

    report = await fleet.poll()

    assert report.outcome is PollOutcome.FAILED
    assert open_sessions(engine) == before


async def test_a_record_repeated_on_the_next_page_is_one_session(fleet: SimulatedFleet,
                                                                 engine: Engine) -> None:
    fleet.app.inject(Fault.repeat_record(endpoint=SESSIONS, page=2))

    report = await fleet.poll()

    assert report.outcome is PollOutcome.OK
    assert open_sessions(engine) == fleet.world_sessions()


async def test_password_rotation_fails_polls_until_the_new_one_is_used(
        fleet: SimulatedFleet, monkeypatch: pytest.MonkeyPatch) -> None:
    await fleet.poll()
    fleet.app.set_password("rotated")

    denied = await fleet.poll()
    monkeypatch.setenv("SIM_PASSWORD", "rotated")
    fleet.advance()
    accepted = await fleet.poll()

    assert denied.outcome is PollOutcome.FAILED and "HTTP 401" in (denied.error or "")
    assert accepted.outcome is PollOutcome.OK


async def test_a_remembering_collector_rereads_after_another_collector_wrote(
        store: HistoryStore, engine: Engine, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="collector.pipeline")
    monkeypatch.setenv("SIM_PASSWORD", PASSWORD)
    ours = SimulatedFleet(store, sessions=300, churn=60.0, seed=5, memory=ClusterMemory())
    theirs = SimulatedFleet(store, sessions=300, churn=60.0, seed=5, memory=ClusterMemory())
    theirs.world, theirs.app = ours.world, ours.app  # one cluster, two collectors

    for poller in (ours, theirs, theirs, ours, ours, theirs, ours):
        ours.advance()
        theirs.minute = ours.minute
        report = await poller.poll()
        assert report.outcome is PollOutcome.OK
        assert open_sessions(engine) == ours.world_sessions()

    with engine.connect() as conn:
        duplicates = conn.scalar(text(
            "SELECT count(*) FROM (SELECT session_id FROM iscsi_audit.events"
            " WHERE kind = 'connect' GROUP BY session_id HAVING count(*) > 1) d"))
    assert duplicates == 0
    # each switch to a collector that remembered an older version found the other's write
    # and polled afresh: ours at its 2nd and 4th poll, theirs at its 3rd
    assert caplog.text.count("is stale") == 3
