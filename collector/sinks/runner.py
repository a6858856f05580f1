"""One sink's loop: read after its position, deliver, then advance the position.

The events table is the outbox and the stored position is the sink's only state, so a
sink delivers every event at least once, in event_id order, across restarts: the position
moves only after a batch was delivered, in its own transaction. A batch that fails is sent
again after a backoff; a failing sink waits alone, the others go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from collector.config import ConfigError
from collector.db.feed import Batch, EventFeed
from collector.sinks import metrics
from collector.sinks.config import SinkConfig
from collector.sinks.destinations import DELIVERY_ERRORS, Destination, open_destination
from collector.sinks.positions import lag, load_position, save_error, save_position

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential delays after consecutive failures, capped."""

    initial: float = 1.0
    maximum: float = 60.0

    def delay(self, failures: int) -> float:
        return float(min(self.maximum, self.initial * 2 ** max(failures - 1, 0)))


DEFAULT_BACKOFF = Backoff()
# a receiver or the database being down, or a token missing: retried, never fatal
_RETRIED: tuple[type[Exception], ...] = (*DELIVERY_ERRORS, SQLAlchemyError, ConfigError)


class SinkRunner:
    def __init__(
        self,
        engine: Engine,
        sink: SinkConfig,
        *,
        backoff: Backoff,
        poll_interval: float,
    ) -> None:
        self.engine = engine
        self.sink = sink
        self.backoff = backoff
        self.poll_interval = poll_interval
        # set by the LISTEN task on every notification: "there may be new events"
        self.wake = asyncio.Event()
        self.feed = EventFeed(engine)
        self.failures = 0

    async def run(self, stop: asyncio.Event) -> None:
        destination: Destination | None = None
        position: int | None = None
        try:
            while not stop.is_set():
                self.wake.clear()  # before reading: a notification during the round counts
                try:
                    if position is None:
                        position = await asyncio.to_thread(load_position, self.engine, self.name)
                    if destination is None:
                        destination = open_destination(self.sink)
                    position, more = await self._round(destination, position)
                except _RETRIED as exc:
                    await self._failed(exc)
                    await _sleep_or_stop(stop, self.backoff.delay(self.failures))
                    continue
                self.failures = 0
                if not more:
                    await _wake_or_stop(stop, self.wake, self.poll_interval)
        finally:
            if destination is not None:
                await destination.close()

    @property
    def name(self) -> str:
        return self.sink.name

    async def _round(self, destination: Destination, position: int) -> tuple[int, bool]:
        """Deliver one batch; return the new position and whether more are waiting."""
        batch: Batch = await asyncio.to_thread(self.feed.read_after, position, self.sink.batch_size)
        if batch.events:
            await destination.deliver(batch.events)
            await asyncio.to_thread(save_position, self.engine, self.name, batch.position)
            metrics.EVENTS_DELIVERED.labels(self.name).inc(len(batch.events))
            metrics.LAST_DELIVERED_EVENT_ID.labels(self.name).set(batch.position)
            log.debug(
                "sink %s delivered %d events up to %d",
                self.name,
                len(batch.events),
                batch.position,
                extra={"sink": self.name},
            )
        pending = await asyncio.to_thread(lag, self.engine, batch.position)
        metrics.LAG_EVENTS.labels(self.name).set(pending)
        return batch.position, batch.more

    async def _failed(self, exc: Exception) -> None:
        self.failures += 1
        metrics.DELIVERY_FAILURES.labels(self.name).inc()
        error = _describe(exc)
        log.warning(
            "sink %s: %s (retry %d in %.0fs)",
            self.name,
            error,
            self.failures,
            self.backoff.delay(self.failures),
            extra={"sink": self.name},
        )
        if not isinstance(exc, SQLAlchemyError):
            # the database may be down too; the log line says what happened
            with contextlib.suppress(SQLAlchemyError):
                await asyncio.to_thread(save_error, self.engine, self.name, error)


def _describe(exc: Exception) -> str:
    # the message alone, never a request: headers may carry the token
    text = str(exc) or type(exc).__name__
    if isinstance(exc, SQLAlchemyError):
        text = str(getattr(exc, "orig", None) or exc).splitlines()[0]
    return f"{type(exc).__name__}: {text}"


async def _sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def _wake_or_stop(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
