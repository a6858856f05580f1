"""The simulator on real sockets: NetApp's own client reads it, and `--tls` verifies for real."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from netapp_ontap import HostConnection, config
from netapp_ontap.resources import Igroup, IpInterface, IscsiSession

from collector.simulator import SESSIONS, SimulatorApp, World, create_app, session_href
from collector.simulator.server import SimulatorServer
from collector.simulator.tls import make_tls_files
from tests.simulator_fixtures import PASSWORD

SESSION_COUNT = 600


@pytest.fixture(scope="module")
def world() -> World:
    return World.generate(clusters=2, sessions=SESSION_COUNT, seed=21)


@pytest.fixture(scope="module")
def server(world: World) -> Iterator[SimulatorServer]:
    with SimulatorServer(create_app(world, password=PASSWORD), port=0) as running:
        yield running


@pytest.fixture
def strict_netapp_schema(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fields NetApp's schema does not know then fail the load instead of passing through."""
    monkeypatch.setattr(config, "STRICT_FIELD_ACCEPTANCE", True)


def _netapp_connection(server: SimulatorServer, cluster: int) -> HostConnection:
    url = urlsplit(server.base_url(cluster))
    return HostConnection(
        url.hostname,
        username="admin",
        password=PASSWORD,
        scheme="http",
        port=url.port,
        verify=False,
    )


@pytest.mark.usefixtures("strict_netapp_schema")
def test_netapp_client_pages_every_session_into_its_own_schema(
    server: SimulatorServer, world: World
) -> None:
    for cluster in (0, 1):
        with _netapp_connection(server, cluster) as connection:
            sessions = list(
                IscsiSession.get_collection(connection=connection, fields="**", max_records=200)
            )
        assert len(sessions) == SESSION_COUNT
        seen = {(s.svm.uuid, s.target_portal_group, s.tsih) for s in sessions}
        assert seen == set(world.clusters[cluster].session_keys)
        first = sessions[0]
        assert first.connections[0].interface.ip.port == 3260
        assert first.isid and first.initiator.name.startswith("iqn.")


@pytest.mark.usefixtures("strict_netapp_schema")
def test_netapp_client_reads_igroups_and_interfaces(server: SimulatorServer, world: World) -> None:
    cluster = world.clusters[0]
    with _netapp_connection(server, 0) as connection:
        igroups = list(Igroup.get_collection(connection=connection, fields="**", max_records=50))
        lifs = list(IpInterface.get_collection(connection=connection, fields="**", max_records=5))
    assert {g.uuid for g in igroups} == set(cluster.igroups)
    assert all(g.protocol == "iscsi" for g in igroups)
    assert {i.uuid for i in lifs} == set(cluster.interfaces)
    assert all(i.location.home_node.name for i in lifs)


@pytest.mark.usefixtures("strict_netapp_schema")
def test_single_session_fetched_by_path_loads_into_netapp_schema(
    server: SimulatorServer, world: World
) -> None:
    key = world.clusters[0].session_keys[17]
    with _netapp_connection(server, 0) as connection:
        response = connection.session.get(
            f"{connection.origin}{session_href(key)}", params={"fields": "**"}
        )
    response.raise_for_status()
    session = IscsiSession.from_dict(response.json())
    assert (session.svm.uuid, session.target_portal_group, session.tsih) == tuple(key)


def test_tls_client_verifying_against_the_written_ca_succeeds_and_others_fail(
    tmp_path: Path,
) -> None:
    tls = make_tls_files(tmp_path, ["127.0.0.1"])
    app: SimulatorApp = create_app(World.generate(sessions=5, seed=1), password=PASSWORD)
    with SimulatorServer(app, port=0, tls=tls) as server:
        url = server.base_url(0) + SESSIONS
        assert url.startswith("https://127.0.0.1:")
        trusted = httpx.get(
            url, auth=("admin", PASSWORD), verify=ssl.create_default_context(cafile=tls.ca_path)
        )
        assert trusted.status_code == 200
        assert trusted.json()["num_records"] == 5
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url, auth=("admin", PASSWORD))
