"""Scheduling and backoff: the pure rules without a clock, then the scheduler on a real loop,
real database and the real ONTAP client (answers from `FakeOntap` over httpx.MockTransport).
"""

from __future__ import annotations

import asyncio
import math
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from collector.config import ClusterConfig, ConfigError, PasswordSource, load_config
from collector.db.store import HistoryStore
from collector.diff import PollOutcome
from collector.metrics import CollectorMetrics
from collector.ontap.client import RetryPolicy
from collector.pipeline import PollReport, poll_cluster
from collector.scheduler import (
    Health,
    PollScheduler,
    backoff_delay,
    jitter_of,
    plan_changes,
)
from tests.ontap_pages import FakeOntap, connect_error, session_record

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# --- the pure rules ------------------------------------------------------------------


def test_the_first_failure_keeps_the_interval_then_each_one_doubles_up_to_the_cap() -> None:
    delays = [backoff_delay(n, interval=60, cap=900) for n in range(1, 8)]
    assert delays == [60, 120, 240, 480, 900, 900, 900]


def test_a_cap_below_the_interval_never_polls_faster_than_the_interval() -> None:
    assert backoff_delay(5, interval=60, cap=10) == 60


def test_a_cluster_down_for_months_still_gets_a_finite_delay() -> None:
    assert backoff_delay(10**9, interval=60, cap=900) == 900
    assert math.isfinite(backoff_delay(10**9, interval=60, cap=math.inf))


def test_health_backs_off_from_the_second_failure_and_says_when_to_retry() -> None:
    one = Health().after("failed", T0, interval=10, cap=100)
    two = one.after("failed", T0, interval=10, cap=100)
    three = two.after("error", T0 + timedelta(seconds=20), interval=10, cap=100)
    assert (one.failures, one.backed_off) == (1, False)
    assert (two.failures, two.delay, two.retry_at) == (2, 20, T0 + timedelta(seconds=20))
    assert (three.failures, three.delay, three.retry_at) == (3, 40, T0 + timedelta(seconds=60))


@pytest.mark.parametrize("outcome", ["ok", "partial"])
def test_a_cluster_that_answers_ends_its_backoff(outcome: str) -> None:
    backed_off = Health(5, 100, T0)
    assert backed_off.after(outcome, T0, interval=10, cap=100) == Health()


def test_a_reload_plan_names_added_removed_and_changed_clusters() -> None:
    a, b, c = (ClusterConfig(n, f"https://{n}.example.com") for n in "abc")
    faster_b = ClusterConfig("b", "https://b.example.com", interval=5)
    changes = plan_changes({"a": a, "b": b}, [faster_b, c])
    assert changes.added == (c,)
    assert changes.removed == ("a",)
    assert changes.changed == (faster_b,)
    assert changes.summary() == "added c; removed a; changed b"
    assert plan_changes({"a": a}, [a]).summary() == "no cluster changed"


def test_jitter_defaults_to_a_tenth_of_the_interval() -> None:
    assert jitter_of(ClusterConfig("a", "https://a", interval=60)) == 6
    assert jitter_of(ClusterConfig("a", "https://a", interval=60, jitter=0)) == 0


# --- the [collector] table and jitter in the config file ------------------------------


def _write(path: Path, body: str) -> Path:
    path.write_text(body, encoding="utf-8")
    return path


CLUSTER = """
[[clusters]]
name = "lab"
url = "https://lab.example.com"
username = "audit"
password_env = "LAB_PASSWORD"
interval = "60s"
"""


def test_the_collector_table_sets_concurrency_backoff_and_default_jitter(tmp_config) -> None:
    config = load_config(_write(tmp_config, f"""
[collector]
concurrency = 3
max_backoff = "10m"
jitter = "2s"
remember_sessions = 50000
{CLUSTER}"""))
    assert (config.collector.concurrency, config.collector.max_backoff) == (3, 600)
    assert config.collector.remember_sessions == 50_000
    assert config.clusters[0].jitter == 2


def test_without_a_collector_table_the_defaults_hold(tmp_config) -> None:
    config = load_config(_write(tmp_config, CLUSTER))
    assert (config.collector.concurrency, config.collector.max_backoff) == (8, 900)
    assert config.collector.remember_sessions == 1_000_000
    assert config.clusters[0].jitter is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("[collector]\nconcurrency = 0\n", "collector.concurrency: 0: must be an integer from 1"),
        ('[collector]\nmax_backoff = "soon"\n', "collector.max_backoff: 'soon': expected a dur"),
        ("[collector]\nthreads = 4\n", "collector.threads: unknown key"),
        ("[collector]\nremember_sessions = -1\n", "collector.remember_sessions: -1: must be an"),
        ('[collector]\njitter = "2m"\n' + CLUSTER, "collector.jitter: 120s is longer than the"),
        (CLUSTER + 'jitter = "-1s"\n', "clusters[0].jitter: '-1s': expected a duration"),
        ("collector = 3\n", "collector: must be a table ([collector])"),
    ],
)
def test_a_bad_collector_setting_is_named_by_file_and_key(
    tmp_config, body: str, message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_config(_write(tmp_config, body))
    assert str(raised.value).startswith(f"{tmp_config}: {message}")


# --- the scheduler on a real loop and a real database --------------------------------


def _cluster(name: str, interval: float, monkeypatch: pytest.MonkeyPatch) -> ClusterConfig:
    monkeypatch.setenv("LAB_PASSWORD", "secret")
    return ClusterConfig(
        name, f"https://{name}.example.com", username="admin",
        password=PasswordSource("env", "LAB_PASSWORD"), interval=interval, jitter=0, retries=0,
    )


def _poller(store: HistoryStore, transports: dict[str, httpx.AsyncBaseTransport]):
    async def poll(cluster: ClusterConfig) -> PollReport:
        return await poll_cluster(cluster, store, transport=transports[cluster.name],
                                  retry=RetryPolicy(retries=0))
    return poll


def _poll_counts(engine: Engine) -> dict[tuple[str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT cluster_label, outcome, count(*) FROM iscsi_audit.polls GROUP BY 1, 2"))
        return {(label, outcome): n for label, outcome, n in rows}


async def test_each_cluster_is_polled_on_its_own_interval(
    monkeypatch, store: HistoryStore, engine: Engine
) -> None:
    fast, slow = _cluster("fast", 0.2, monkeypatch), _cluster("slow", 0.6, monkeypatch)
    transports = {
        "fast": FakeOntap(pages=[[session_record(1)]]).transport(),
        "slow": FakeOntap(pages=[[session_record(2)]],
                          cluster_uuid="00000000-0000-0000-0000-00000000000b").transport(),
    }
    scheduler = PollScheduler(_poller(store, transports), CollectorMetrics(),
                              concurrency=4, max_backoff=10)
    scheduler.apply([fast, slow], max_backoff=10)
    scheduler.start()
    await asyncio.sleep(1.3)
    await scheduler.stop()

    counts = _poll_counts(engine)
    # first polls at once, then every 0.2 s (fast) and every 0.6 s (slow)
    assert 6 <= counts[("fast", "ok")] <= 8
    assert 2 <= counts[("slow", "ok")] <= 3


async def test_a_failing_cluster_is_backed_off_and_does_not_delay_the_others(
    monkeypatch, store: HistoryStore, engine: Engine
) -> None:
    async def slow_refusal(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0.1)  # a cluster that takes its time to fail
        return connect_error(request)

    good, bad = _cluster("good", 0.2, monkeypatch), _cluster("bad", 0.2, monkeypatch)
    transports: dict[str, httpx.AsyncBaseTransport] = {
        "good": FakeOntap(pages=[[session_record(1)]]).transport(),
        "bad": httpx.MockTransport(slow_refusal),
    }
    metrics = CollectorMetrics()
    # concurrency 2: the bad cluster holds one slot at most (max_instances=1)
    scheduler = PollScheduler(_poller(store, transports), metrics, concurrency=2, max_backoff=0.8)
    scheduler.apply([good, bad], max_backoff=0.8)
    started = time.monotonic()
    scheduler.start()
    await asyncio.sleep(2.0)
    health = scheduler.health("bad")
    await scheduler.stop()
    elapsed = time.monotonic() - started

    counts = _poll_counts(engine)
    assert counts[("good", "ok")] >= int(elapsed / 0.2) - 1  # on time despite its neighbour
    # without backoff: one attempt per 0.2 s, ~10; with it the delays are 0.2, 0.4, 0.8, 0.8
    assert 3 <= counts[("bad", "failed")] <= 5
    assert health.failures == counts[("bad", "failed")]
    assert health.backed_off and health.delay in (0.4, 0.8)
    assert metrics.backoff.labels("bad")._value.get() == health.delay
    assert metrics.consecutive_failures.labels("bad")._value.get() == health.failures
    assert metrics.polls.labels("bad", "failed")._value.get() == health.failures


async def test_a_reload_adds_and_removes_clusters_and_their_metrics(
    monkeypatch, store: HistoryStore, engine: Engine
) -> None:
    a, b = _cluster("a", 0.2, monkeypatch), _cluster("b", 0.2, monkeypatch)
    transports = {
        "a": FakeOntap(pages=[[session_record(1)]]).transport(),
        "b": FakeOntap(pages=[[session_record(2)]],
                       cluster_uuid="00000000-0000-0000-0000-00000000000b").transport(),
    }
    metrics = CollectorMetrics()
    scheduler = PollScheduler(_poller(store, transports), metrics, concurrency=2, max_backoff=1)
    scheduler.apply([a], max_backoff=1)
    scheduler.start()
    await asyncio.sleep(0.3)
    changes = scheduler.apply([b], max_backoff=1)
    await asyncio.sleep(0.5)
    await scheduler.stop()

    assert changes.summary() == "added b; removed a"
    assert _poll_counts(engine)[("b", "ok")] >= 2
    scrape = _scrape(metrics)
    assert 'cluster="b"' in scrape and 'cluster="a"' not in scrape


async def test_stopping_waits_for_nothing_but_a_write_in_progress(
    monkeypatch, store: HistoryStore, engine: Engine
) -> None:
    async def hang(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(60)
        raise AssertionError("not reached")

    cluster = _cluster("hung", 1, monkeypatch)
    scheduler = PollScheduler(_poller(store, {"hung": httpx.MockTransport(hang)}),
                              CollectorMetrics(), concurrency=1, max_backoff=1)
    scheduler.apply([cluster], max_backoff=1)
    scheduler.start()
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await scheduler.stop()

    assert time.monotonic() - started < 1
    assert _poll_counts(engine) == {}  # the abandoned walk wrote nothing


def _scrape(metrics: CollectorMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_metrics_count_a_poll_by_outcome_and_its_events_by_kind() -> None:
    metrics = CollectorMetrics(clock=lambda: T0.timestamp() + 30)
    metrics.add_cluster("lab", last_ok_at=None)
    assert 'iscsi_audit_seconds_since_last_ok_poll{cluster="lab"} +Inf' in _scrape(metrics)
    metrics.observe(PollReport("lab", 1, PollOutcome.OK, T0, T0 + timedelta(seconds=2), 3, 0,
                               ("connect", "connect", "disconnect"), None))
    scrape = _scrape(metrics)
    assert 'iscsi_audit_polls_total{cluster="lab",outcome="ok"} 1.0' in scrape
    assert 'iscsi_audit_events_total{cluster="lab",kind="connect"} 2.0' in scrape
    assert 'iscsi_audit_open_sessions{cluster="lab"} 3.0' in scrape
    assert 'iscsi_audit_poll_duration_seconds_sum{cluster="lab"} 2.0' in scrape
    assert 'iscsi_audit_seconds_since_last_ok_poll{cluster="lab"} 30.0' in scrape
