"""The bundled ONTAP REST simulator: a deterministic SAN world served as ONTAP's REST API.

Tests and benchmarks use the Python API::

    world = World.generate(clusters=1, sessions=500, seed=7)
    app = create_app(world, password="secret")
    app.inject(Fault.server_error(endpoint=SESSIONS, page=2))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                 base_url=app.base_url(0), auth=("admin", "secret")) as c:
        ...

See docs/simulator.md.
"""

from __future__ import annotations

from collector.simulator.app import (
    DEFAULT_PASSWORD,
    DEFAULT_USERNAME,
    OntapError,
    SimulatorApp,
    create_app,
)
from collector.simulator.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    SimulatedConnectionRefused,
    SimulatedConnectionReset,
)
from collector.simulator.records import (
    CLUSTER,
    IGROUPS,
    INTERFACES,
    ISCSI_SERVICES,
    SESSIONS,
    SVMS,
    render_session,
    session_href,
)
from collector.simulator.world import (
    Cluster,
    Connection,
    Host,
    Igroup,
    Interface,
    Session,
    SessionKey,
    Svm,
    World,
)

__all__ = [
    "CLUSTER",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERNAME",
    "IGROUPS",
    "INTERFACES",
    "ISCSI_SERVICES",
    "SESSIONS",
    "SVMS",
    "Cluster",
    "Connection",
    "Fault",
    "FaultKind",
    "FaultPlan",
    "Host",
    "Igroup",
    "Interface",
    "OntapError",
    "Session",
    "SessionKey",
    "SimulatedConnectionRefused",
    "SimulatedConnectionReset",
    "SimulatorApp",
    "Svm",
    "World",
    "create_app",
    "render_session",
    "session_href",
]
