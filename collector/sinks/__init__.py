"""Forwarding audit events to where security teams look: syslog, a webhook, a file.

`run_sinks` runs one loop per configured sink (see `runner`) and one LISTEN connection
that wakes them when a poll commits events; each loop also reads every few seconds, so a
lost notification or a dropped LISTEN connection only delays delivery.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import psycopg
from sqlalchemy import Engine

from collector.db.feed import libpq_url
from collector.db.store import NOTIFY_CHANNEL
from collector.sinks.config import SinkConfig
from collector.sinks.runner import DEFAULT_BACKOFF, Backoff, SinkRunner

log = logging.getLogger(__name__)

POLL_INTERVAL = 5.0
# on stop, a batch in flight may finish; after this it is cancelled (and sent again later)
STOP_GRACE = 5.0


async def run_sinks(
    engine: Engine,
    sinks: Sequence[SinkConfig],
    stop: asyncio.Event,
    *,
    backoff: Backoff = DEFAULT_BACKOFF,
    poll_interval: float = POLL_INTERVAL,
) -> None:
    """Deliver events to every sink until `stop` is set."""
    if not sinks:
        return
    runners = [SinkRunner(engine, s, backoff=backoff, poll_interval=poll_interval) for s in sinks]
    tasks = [asyncio.create_task(r.run(stop), name=f"sink {r.name}") for r in runners]
    listener = asyncio.create_task(_listen(engine, runners, backoff), name="sinks listen")
    try:
        await stop.wait()
        await asyncio.wait(tasks, timeout=STOP_GRACE)
    finally:
        listener.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(listener, *tasks, return_exceptions=True)


async def _listen(engine: Engine, runners: Sequence[SinkRunner], backoff: Backoff) -> None:
    failures = 0
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                libpq_url(engine), autocommit=True
            ) as conn:
                await conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
                failures = 0
                # wake everyone once on (re)connect: a commit may have gone unheard
                _wake(runners)
                async for _ in conn.notifies():
                    _wake(runners)
        except psycopg.OperationalError as exc:
            failures += 1
            log.warning("sinks: LISTEN connection lost (%s); polling meanwhile", exc)
            await asyncio.sleep(backoff.delay(failures))


def _wake(runners: Sequence[SinkRunner]) -> None:
    for runner in runners:
        runner.wake.set()
