"""Serving the simulator with uvicorn: one listening socket per cluster, one event loop.

`SimulatorServer` binds cluster i to `port + i` (or to ephemeral ports when `port=0`,
as tests do), tells the app which port is which cluster, and runs uvicorn either in the
foreground (the command) or in a background thread (tests and benchmarks).
"""

from __future__ import annotations

import threading
import time
from types import TracebackType

import uvicorn

from collector.listen import listening_socket
from collector.simulator.app import SimulatorApp
from collector.simulator.tls import TlsFiles


class SimulatorServer:
    def __init__(
        self,
        app: SimulatorApp,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        tls: TlsFiles | None = None,
    ) -> None:
        self.app = app
        self.host = host
        self.tls = tls
        self._sockets = [
            listening_socket(host, port + i if port else 0) for i in range(len(app.world.clusters))
        ]
        self.ports = [sock.getsockname()[1] for sock in self._sockets]
        app.bind_ports(self.ports)
        config = uvicorn.Config(
            app,
            log_level="warning",
            lifespan="off",
            # A hung request must not keep shutdown waiting for ever.
            timeout_graceful_shutdown=1,
            ssl_certfile=str(tls.cert_path) if tls else None,
            ssl_keyfile=str(tls.key_path) if tls else None,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def base_url(self, cluster: int = 0) -> str:
        host = "localhost" if self.host in ("0.0.0.0", "::") else self.host
        host = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{host}:{self.ports[cluster]}"

    def run(self) -> None:
        """Serve in the foreground until interrupted."""
        self._server.run(sockets=self._sockets)

    def start(self, timeout: float = 10.0) -> None:
        """Serve from a background thread; return once the sockets accept requests."""
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": self._sockets}, daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("simulator server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        for sock in self._sockets:
            sock.close()

    def __enter__(self) -> SimulatorServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
