"""When each cluster is polled: one APScheduler job per cluster, backoff for failing ones.

The rules are pure and take the time as an argument (`backoff_delay`, `Health.after`,
`plan_changes`), so they are tested without a clock. `PollScheduler` puts them on an
`AsyncIOScheduler`: one interval job per cluster with the cluster's interval and jitter,
`max_instances=1` (a slow cluster never polls twice at once), `coalesce=True` (missed runs
collapse into one) and a misfire grace of one interval (an event loop that was busy for a
moment delays a poll rather than dropping it). Polls of different clusters run
concurrently, at most `concurrency` at a time.

Backoff: the first failure keeps the normal interval, since one bad poll is often a blip.
Each further failure in a row doubles the delay to the next attempt, up to `max_backoff`.
An ok or partial poll (the cluster answered) ends the run. Only the failing cluster's job
moves; no other job waits for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# APScheduler 3 ships no type information
from apscheduler.jobstores.base import JobLookupError  # type: ignore[import-untyped]
from apscheduler.schedulers.asyncio import AsyncIOScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]

from collector.config import ClusterConfig
from collector.diff import PollOutcome
from collector.metrics import POLL_ERROR, CollectorMetrics
from collector.pipeline import PollReport, utcnow

log = logging.getLogger(__name__)

PollFunction = Callable[[ClusterConfig], Awaitable[PollReport]]

# 2**32 intervals is beyond any cap; the bound keeps the float arithmetic finite
_MAX_DOUBLINGS = 32


def backoff_delay(failures: int, interval: float, cap: float) -> float:
    """Seconds from the end of the `failures`-th failed poll in a row to the next attempt."""
    if failures <= 1:
        return interval
    doublings = min(failures - 1, _MAX_DOUBLINGS)
    return max(interval, min(cap, interval * 2.0**doublings))


def jitter_of(cluster: ClusterConfig) -> float:
    """The configured jitter, else a tenth of the interval (clusters sharing one drift apart)."""
    return cluster.interval / 10 if cluster.jitter is None else cluster.jitter


@dataclass(frozen=True, slots=True)
class Health:
    """A cluster's run of failed polls and the backoff it has earned."""

    failures: int = 0  # failed polls in a row
    delay: float = 0.0  # backoff delay in force; 0 when the cluster is polled on its interval
    retry_at: datetime | None = None  # when a backed-off cluster is polled next

    @property
    def backed_off(self) -> bool:
        return self.retry_at is not None

    def after(self, outcome: str, now: datetime, interval: float, cap: float) -> Health:
        """The health after a poll that ended at `now` with `outcome` (a metrics outcome)."""
        if outcome not in (PollOutcome.FAILED.value, POLL_ERROR):
            return Health()
        failures = self.failures + 1
        if failures == 1:
            return Health(failures)
        delay = backoff_delay(failures, interval, cap)
        return Health(failures, delay, now + timedelta(seconds=delay))


@dataclass(frozen=True, slots=True)
class ClusterChanges:
    """What a new configuration does to the scheduled clusters, by name."""

    added: tuple[ClusterConfig, ...]
    removed: tuple[str, ...]
    changed: tuple[ClusterConfig, ...]

    def summary(self) -> str:
        parts = [
            f"{label} {', '.join(names)}"
            for label, names in (
                ("added", [c.name for c in self.added]),
                ("removed", list(self.removed)),
                ("changed", [c.name for c in self.changed]),
            )
            if names
        ]
        return "; ".join(parts) or "no cluster changed"


def plan_changes(
    current: Mapping[str, ClusterConfig], new: Sequence[ClusterConfig]
) -> ClusterChanges:
    by_name = {c.name: c for c in new}
    return ClusterChanges(
        added=tuple(c for c in new if c.name not in current),
        removed=tuple(name for name in current if name not in by_name),
        changed=tuple(c for c in new if c.name in current and current[c.name] != c),
    )


class PollScheduler:
    """Polls every configured cluster on its own schedule until stopped."""

    def __init__(
        self,
        poll: PollFunction,
        metrics: CollectorMetrics,
        *,
        concurrency: int,
        max_backoff: float,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self._poll = poll
        self._metrics = metrics
        self._gate = asyncio.Semaphore(concurrency)
        self._max_backoff = max_backoff
        self._clock = clock
        self._scheduler = AsyncIOScheduler(timezone=UTC)
        self._clusters: dict[str, ClusterConfig] = {}
        self._health: dict[str, Health] = {}
        self._in_flight: set[asyncio.Task[object]] = set()

    @property
    def clusters(self) -> Mapping[str, ClusterConfig]:
        return self._clusters

    def health(self, name: str) -> Health:
        return self._health.get(name, Health())

    def start(self) -> None:
        self._scheduler.start()

    def apply(
        self,
        clusters: Sequence[ClusterConfig],
        max_backoff: float,
        last_ok: Mapping[str, datetime] | None = None,
    ) -> ClusterChanges:
        """Schedule exactly `clusters`: add the new, drop the gone, restart the changed.

        A changed cluster starts afresh (polled now, backoff cleared): the change is most
        likely the fix for whatever made it fail.
        """
        changes = plan_changes(self._clusters, clusters)
        self._max_backoff = max_backoff
        for name in changes.removed:
            self._unschedule(name)
            self._metrics.remove_cluster(name)
        for cluster in changes.changed:
            self._unschedule(cluster.name)
            self._schedule(cluster)
        for cluster in changes.added:
            self._metrics.add_cluster(cluster.name, (last_ok or {}).get(cluster.name))
            self._schedule(cluster)
        self._metrics.clusters.set(len(self._clusters))
        return changes

    async def stop(self) -> None:
        """Start no more polls; abandon the walks in flight and wait for any write to commit."""
        if self._scheduler.running:
            self._scheduler.pause()
        polls = list(self._in_flight)
        for task in polls:
            task.cancel()
        await asyncio.gather(*polls, return_exceptions=True)
        if self._scheduler.running:
            self._scheduler.shutdown(wait=False)

    def _schedule(self, cluster: ClusterConfig) -> None:
        jitter = jitter_of(cluster)
        self._clusters[cluster.name] = cluster
        self._health[cluster.name] = Health()
        self._metrics.set_backoff(cluster.name, 0, 0.0)
        self._scheduler.add_job(
            self._poll_job,
            IntervalTrigger(seconds=cluster.interval, jitter=jitter or None, timezone=UTC),
            args=[cluster.name],
            id=cluster.name,
            name=f"poll {cluster.name}",
            max_instances=1,
            coalesce=True,
            misfire_grace_time=max(1, math.ceil(cluster.interval)),
            # the first poll comes at once, spread over the jitter so a start with hundreds
            # of clusters does not knock on every one in the same second
            next_run_time=self._clock() + timedelta(seconds=random.uniform(0, jitter)),
        )

    def _unschedule(self, name: str) -> None:
        with contextlib.suppress(JobLookupError):  # a reload may race a removal
            self._scheduler.remove_job(name)
        self._clusters.pop(name, None)
        self._health.pop(name, None)

    async def _poll_job(self, name: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        try:
            async with self._gate:
                cluster = self._clusters.get(name)
                if cluster is None:  # removed by a reload while waiting for its turn
                    return
                outcome = await self._poll_once(cluster)
            self._after(cluster, outcome)
        except asyncio.CancelledError:
            # the collector is stopping; the end of this task, so the cancel stops here
            log.info("poll abandoned: the collector is stopping", extra={"cluster": name})
        finally:
            self._in_flight.discard(task)

    async def _poll_once(self, cluster: ClusterConfig) -> str:
        started = time.monotonic()
        self._metrics.in_flight.inc()
        try:
            report = await self._poll(cluster)
        except Exception:
            # the history could not be written (the pipeline records cluster failures itself)
            log.exception("poll not recorded", extra={"cluster": cluster.name})
            self._metrics.observe_error(cluster.name, time.monotonic() - started)
            return POLL_ERROR
        finally:
            self._metrics.in_flight.dec()
        if cluster.name in self._clusters:  # a cluster removed meanwhile keeps no series
            self._metrics.observe(report)
        return report.outcome.value

    def _after(self, cluster: ClusterConfig, outcome: str) -> None:
        if self._clusters.get(cluster.name) is not cluster:
            return  # removed or replaced by a reload while it polled: its schedule is new
        before = self._health.get(cluster.name, Health())
        now = self._clock()
        health = before.after(outcome, now, cluster.interval, self._max_backoff)
        self._health[cluster.name] = health
        self._metrics.set_backoff(cluster.name, health.failures, health.delay)
        fields = {"cluster": cluster.name}
        if health.retry_at is not None:
            self._scheduler.modify_job(cluster.name, next_run_time=health.retry_at)
            log.warning(
                "%d failed polls in a row: backing off, next poll in %.0fs",
                health.failures,
                health.delay,
                extra=fields,
            )
        elif before.backed_off and not health.failures:
            log.info("polled %s after %d failed polls", outcome, before.failures, extra=fields)
