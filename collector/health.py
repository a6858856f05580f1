"""The daemon's operations endpoint: `/metrics` for Prometheus and `/healthz` for probes.

`/healthz` is 200 only when the database answers and its schema is at the revision this
version was built for; otherwise 503 with the reason. A collector that cannot record
(database down, or migrated by a newer version beside it) is alive but not ready.

The endpoint runs in a thread of its own (uvicorn on its own event loop), so a scrape
never waits for a poll and a busy collector still answers its probes.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import asdict, dataclass

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from collector.db.database import current_revision, head_revision
from collector.listen import listening_socket

# a probe that hangs is as bad as a failed one; kubelet and systemd time out too
CHECK_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reason: str
    schema_revision: str | None = None
    head_revision: str | None = None


def check_readiness(engine: Engine) -> Readiness:
    """Is the database reachable and at this version's schema head?"""
    head = head_revision()
    try:
        current = current_revision(engine)
    except DBAPIError as exc:
        # the driver's message names host and port, never the password
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return Readiness(False, f"database unreachable: {first_line}", None, head)
    if current != head:
        return Readiness(
            False,
            f"schema at revision {current or 'none'}, this version needs {head}",
            current,
            head,
        )
    return Readiness(True, "ready", current, head)


def create_app(registry: CollectorRegistry, engine: Engine) -> Starlette:
    async def healthz(request: Request) -> Response:
        try:
            readiness = await asyncio.wait_for(
                asyncio.to_thread(check_readiness, engine), CHECK_TIMEOUT
            )
        except TimeoutError:
            readiness = Readiness(False, f"database did not answer in {CHECK_TIMEOUT:g}s")
        return JSONResponse(asdict(readiness), status_code=200 if readiness.ready else 503)

    async def metrics(request: Request) -> Response:
        # the collector's own registry, then the default one: the sinks' metrics and the
        # process's (CPU, memory, open files)
        body = generate_latest(registry) + generate_latest(REGISTRY)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/healthz", healthz), Route("/metrics", metrics)])


class OperationsServer:
    """Serves `/metrics` and `/healthz` from a background thread."""

    def __init__(
        self, registry: CollectorRegistry, engine: Engine, *, host: str, port: int
    ) -> None:
        self._socket = listening_socket(host, port)
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = uvicorn.Config(
            create_app(registry, engine),
            log_config=None,  # uvicorn's lines go through our handlers and format
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [self._socket]},
            name="operations-endpoint",
            daemon=True,
        )

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError(f"the metrics endpoint did not start on {self.url}")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)
        self._socket.close()
