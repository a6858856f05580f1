"""Prometheus metrics of the collector daemon, in a registry of its own.

Every series is labelled by the configured cluster name (`cluster`), never by address or
credentials. A cluster removed by a reload loses its series, so a dashboard does not keep
alerting on a cluster nobody polls any more.

    iscsi_audit_polls_total{cluster,outcome}             counter: ok, partial, failed, error
    iscsi_audit_poll_duration_seconds{cluster}           histogram: walk and write
    iscsi_audit_open_sessions{cluster}                   gauge: sessions in the last ok/partial poll
    iscsi_audit_events_total{cluster,kind}               counter: events recorded
    iscsi_audit_last_ok_poll_timestamp_seconds{cluster}  gauge: unix time of the last ok poll
    iscsi_audit_seconds_since_last_ok_poll{cluster}      gauge: now minus that (+Inf if none)
    iscsi_audit_consecutive_failures{cluster}            gauge: failed polls in a row
    iscsi_audit_backoff_seconds{cluster}                 gauge: backoff delay in force, 0 if none
    iscsi_audit_polls_in_flight                          gauge
    iscsi_audit_clusters                                 gauge: clusters scheduled
    iscsi_audit_remembered_sessions                      gauge: sessions kept in memory
    iscsi_audit_config_reloads_total{result}             counter: applied, refused

`error` is a poll whose result could not be written (the database failed), as opposed to
`failed`, a cluster that did not answer completely (recorded in the history).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from collector.diff import EventKind, PollOutcome
from collector.pipeline import PollReport

POLL_ERROR = "error"
OUTCOMES = (*(o.value for o in PollOutcome), POLL_ERROR)
RELOAD_RESULTS = ("applied", "refused")
# polls take from milliseconds (a small lab) to minutes (100k sessions over a slow link)
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class CollectorMetrics:
    """The daemon's metrics; the scheduler and the service report into it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.polls = Counter(
            "iscsi_audit_polls", "Polls by cluster and outcome.", ["cluster", "outcome"], registry=r
        )
        self.poll_duration = Histogram(
            "iscsi_audit_poll_duration_seconds",
            "Time to walk a cluster's sessions and write the poll.",
            ["cluster"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.open_sessions = Gauge(
            "iscsi_audit_open_sessions",
            "Sessions seen by the cluster's last ok or partial poll.",
            ["cluster"],
            registry=r,
        )
        self.events = Counter(
            "iscsi_audit_events", "Events recorded, by kind.", ["cluster", "kind"], registry=r
        )
        self.last_ok = Gauge(
            "iscsi_audit_last_ok_poll_timestamp_seconds",
            "Unix time at which the cluster's last ok poll started.",
            ["cluster"],
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "iscsi_audit_consecutive_failures",
            "Failed polls in a row (0 after an ok or partial poll).",
            ["cluster"],
            registry=r,
        )
        self.backoff = Gauge(
            "iscsi_audit_backoff_seconds",
            "Delay before the next poll of a cluster that is backed off; 0 when it is not.",
            ["cluster"],
            registry=r,
        )
        self.in_flight = Gauge("iscsi_audit_polls_in_flight", "Polls running now.", registry=r)
        self.clusters = Gauge("iscsi_audit_clusters", "Clusters scheduled.", registry=r)
        self.remembered_sessions = Gauge(
            "iscsi_audit_remembered_sessions",
            "Open sessions kept in memory between polls, over all clusters"
            " (collector.remember_sessions is the ceiling).",
            registry=r,
        )
        self.reloads = Counter(
            "iscsi_audit_config_reloads",
            "Configuration reloads (SIGHUP) by result.",
            ["result"],
            registry=r,
        )
        for result in RELOAD_RESULTS:
            self.reloads.labels(result)
        self._since_last_ok = _SecondsSinceLastOk(clock)
        r.register(self._since_last_ok)

    def add_cluster(self, name: str, last_ok_at: datetime | None) -> None:
        """Start a cluster's series at zero, so rates and alerts work from its first poll."""
        for outcome in OUTCOMES:
            self.polls.labels(name, outcome)
        self.consecutive_failures.labels(name).set(0)
        self.backoff.labels(name).set(0)
        self._since_last_ok.track(name)
        if last_ok_at is not None:
            self._ok_at(name, last_ok_at)

    def remove_cluster(self, name: str) -> None:
        for outcome in OUTCOMES:
            self.polls.remove(name, outcome)
        for kind in EventKind:
            self.events.remove(name, kind.value)
        for gauge in (
            self.poll_duration,
            self.open_sessions,
            self.last_ok,
            self.consecutive_failures,
            self.backoff,
        ):
            gauge.remove(name)
        self._since_last_ok.forget(name)

    def observe(self, report: PollReport) -> None:
        name = report.cluster
        self.polls.labels(name, report.outcome.value).inc()
        seconds = (report.finished_at - report.started_at).total_seconds()
        self.poll_duration.labels(name).observe(seconds)
        if report.session_count is not None:
            self.open_sessions.labels(name).set(report.session_count)
        for kind in report.event_kinds:
            self.events.labels(name, kind).inc()
        if report.outcome is PollOutcome.OK:
            self._ok_at(name, report.started_at)

    def observe_error(self, name: str, seconds: float) -> None:
        self.polls.labels(name, POLL_ERROR).inc()
        self.poll_duration.labels(name).observe(seconds)

    def set_backoff(self, name: str, failures: int, delay: float) -> None:
        self.consecutive_failures.labels(name).set(failures)
        self.backoff.labels(name).set(delay)

    def _ok_at(self, name: str, when: datetime) -> None:
        self.last_ok.labels(name).set(when.timestamp())
        self._since_last_ok.ok_at(name, when.timestamp())


class _SecondsSinceLastOk(Collector):
    """Computed at scrape time: a stored "seconds since" would be stale between polls."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._last_ok: dict[str, float | None] = {}
        # scrapes are served from another thread than the one polls report from
        self._lock = threading.Lock()

    def track(self, name: str) -> None:
        with self._lock:
            self._last_ok.setdefault(name, None)

    def forget(self, name: str) -> None:
        with self._lock:
            self._last_ok.pop(name, None)

    def ok_at(self, name: str, when: float) -> None:
        with self._lock:
            self._last_ok[name] = when

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "iscsi_audit_seconds_since_last_ok_poll",
            "Seconds since the cluster's last ok poll started (+Inf when it never had one).",
            labels=["cluster"],
        )
        now = self._clock()
        with self._lock:
            items = sorted(self._last_ok.items())
        for name, when in items:
            family.add_metric([name], math.inf if when is None else max(0.0, now - when))
        yield family
