"""The simulator's REST API through httpx.ASGITransport: auth, paging, fields, filters, errors."""

from __future__ import annotations

import httpx
import pytest

from collector.simulator import (
    IGROUPS,
    INTERFACES,
    ISCSI_SERVICES,
    SESSIONS,
    SVMS,
    SimulatorApp,
    World,
    create_app,
)
from tests.simulator_fixtures import JSON_ONLY, PASSWORD, client_for, key_of, walk


@pytest.fixture
def world() -> World:
    return World.generate(clusters=1, sessions=120, seed=11)


@pytest.fixture
def app(world: World) -> SimulatorApp:
    return create_app(world, password=PASSWORD, base_port=18080)


async def test_missing_or_wrong_credentials_get_401_in_ontap_envelope(app: SimulatorApp) -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url=app.base_url(0)
    ) as anonymous:
        response = await anonymous.get(SESSIONS)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Basic")
    assert response.json()["error"]["code"] == "6"
    async with client_for(app, password="wrong") as client:
        assert (await client.get(SESSIONS)).status_code == 401


async def test_next_link_is_opaque_and_walks_every_record_once(
    app: SimulatorApp, world: World
) -> None:
    async with client_for(app) as client:
        records, hrefs = await walk(client, SESSIONS, {"fields": "tsih,isid", "max_records": 7})
    keys = [key_of(r) for r in records]
    assert keys == [tuple(k) for k in world.clusters[0].session_keys]
    assert len(set(keys)) == len(keys) == 120
    assert len(hrefs) == 120 // 7
    for href in hrefs:
        assert href.startswith(SESSIONS + "?start.cursor=")
        assert "fields=isid,tsih" in href or "fields=tsih,isid" in href
        assert "max_records=7" in href
    assert len(set(hrefs)) == len(hrefs)


async def test_logins_and_logouts_between_pages_do_not_disturb_other_records(
    app: SimulatorApp, world: World
) -> None:
    cluster = world.clusters[0]
    before = set(cluster.session_keys)
    async with client_for(app) as client:
        first = (await client.get(SESSIONS, params={"max_records": 50}, headers=JSON_ONLY)).json()
        gone = cluster.session_keys[-1]
        cluster.logout(gone)
        cluster.login("iqn.1994-05.com.redhat:latecomer")
        seen = [key_of(r) for r in first["records"]]
        href = first["_links"]["next"]["href"]
        while href:
            body = (await client.get(href, headers=JSON_ONLY)).json()
            seen.extend(key_of(r) for r in body["records"])
            href = body.get("_links", {}).get("next", {}).get("href")
    assert len(seen) == len(set(seen))
    assert before - {gone} <= set(seen)


async def test_without_fields_records_carry_only_keys_and_links(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        body = (await client.get(SESSIONS, params={"max_records": 3})).json()
    record = body["records"][0]
    assert set(record) == {"svm", "target_portal_group", "tsih", "_links"}
    assert set(record["svm"]) == {"uuid", "name", "_links"}
    assert record["_links"]["self"]["href"].startswith(SESSIONS + "/")
    assert body["num_records"] == 3
    assert "self" in body["_links"] and "next" in body["_links"]


async def test_star_fields_return_the_full_ontap_record_shape(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        for fields in ("*", "**"):
            body = (await client.get(SESSIONS, params={"fields": fields})).json()
            record = body["records"][0]
            assert set(record) == {
                "svm",
                "target_portal_group",
                "target_portal_group_tag",
                "tsih",
                "isid",
                "initiator",
                "igroups",
                "connections",
                "_links",
            }
            connection = record["connections"][0]
            assert set(connection) == {
                "cid",
                "authentication_type",
                "initiator_address",
                "interface",
            }
            assert set(connection["initiator_address"]) == {"address", "port"}
            assert set(connection["interface"]) == {"uuid", "name", "ip", "_links"}
            assert connection["interface"]["ip"]["port"] == 3260


async def test_named_fields_select_dotted_subfields_and_always_keep_the_keys(
    app: SimulatorApp,
) -> None:
    params = {"fields": "initiator.name,connections.interface.ip.address"}
    async with client_for(app) as client:
        body = (await client.get(SESSIONS, params=params, headers=JSON_ONLY)).json()
    record = body["records"][0]
    assert set(record) == {"svm", "target_portal_group", "tsih", "initiator", "connections"}
    assert set(record["initiator"]) == {"name"}
    assert set(record["connections"][0]) == {"interface"}
    assert set(record["connections"][0]["interface"]) == {"ip"}
    assert set(record["connections"][0]["interface"]["ip"]) == {"address"}


async def test_plain_json_drops_record_links_but_keeps_the_next_link(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        response = await client.get(
            SESSIONS, params={"fields": "**", "max_records": 2}, headers=JSON_ONLY
        )
    assert response.headers["content-type"] == "application/json"
    assert "_links" not in response.text.split('"num_records"')[0]
    assert set(response.json()["_links"]) == {"next"}


async def test_hal_accept_gets_hal_links_and_content_type(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        response = await client.get(
            SESSIONS, params={"fields": "igroups"}, headers={"Accept": "application/hal+json"}
        )
    assert response.headers["content-type"] == "application/hal+json"
    record = response.json()["records"][0]
    assert "_links" in record and "_links" in record["svm"]


async def test_unknown_field_is_refused_with_code_2(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        by_fields = await client.get(SESSIONS, params={"fields": "initiator.nickname"})
        by_filter = await client.get(SESSIONS, params={"colour": "blue"})
    for response in (by_fields, by_filter):
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "2"
    assert by_fields.json()["error"]["target"] == "initiator.nickname"


async def test_filters_support_wildcards_negation_or_and_null(
    app: SimulatorApp, world: World
) -> None:
    cluster = world.clusters[0]
    sessions = list(cluster.sessions.values())

    async def names(**params: str) -> list[str]:
        async with client_for(app) as client:
            records, _ = await walk(client, SESSIONS, {"fields": "initiator", **params})
        return [r["initiator"]["name"] for r in records]

    redhat = await names(**{"initiator.name": "IQN.1994-05.COM.REDHAT:*"})
    assert redhat and all(n.startswith("iqn.1994-05.com.redhat:") for n in redhat)
    assert len(redhat) == sum(s.initiator.startswith("iqn.1994-05.com.redhat:") for s in sessions)
    not_redhat = await names(**{"initiator.name": "!iqn.1994-05.com.redhat:*"})
    assert len(redhat) + len(not_redhat) == len(sessions)
    either = await names(**{"initiator.name": "*redhat*|*vmware*"})
    assert len(either) == sum(
        ("redhat" in s.initiator or "vmware" in s.initiator) for s in sessions
    )
    no_alias = await names(**{"initiator.alias": "null"})
    assert len(no_alias) == sum(cluster.hosts[s.initiator].alias is None for s in sessions)
    mcs = await names(**{"connections.cid": ">=1"})
    assert len(mcs) == sum(len(s.connections) > 1 for s in sessions)


async def test_return_records_false_returns_only_the_count(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        body = (await client.get(SESSIONS, params={"return_records": "false"})).json()
    assert body == {"num_records": 120}


async def test_order_by_sorts_records_and_pages_through_them(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        records, _ = await walk(
            client, SESSIONS, {"order_by": "isid desc", "fields": "isid", "max_records": 25}
        )
    isids = [r["isid"] for r in records]
    assert isids == sorted(isids, reverse=True)
    assert len(set(map(key_of, records))) == 120


async def test_single_session_by_path_and_the_errors_for_missing_ones(
    app: SimulatorApp, world: World
) -> None:
    key = world.clusters[0].session_keys[5]
    path = f"{SESSIONS}/{key.svm_uuid}/{key.tpgroup}/{key.tsih}"
    async with client_for(app) as client:
        found = await client.get(path, params={"fields": "**"})
        missing = await client.get(f"{SESSIONS}/{key.svm_uuid}/{key.tpgroup}/65000")
        no_svm = await client.get(f"{SESSIONS}/00000000-0000-0000-0000-000000000000/x/1")
        bad_arg = await client.get(path, params={"max_records": "1"})
    assert found.status_code == 200
    assert key_of(found.json()) == tuple(key)
    assert found.json()["_links"]["self"]["href"] == path
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "4")
    assert (no_svm.status_code, no_svm.json()["error"]["code"]) == (404, "2621462")
    assert bad_arg.status_code == 400


async def test_inventory_endpoints_serve_svms_igroups_interfaces_and_targets(
    app: SimulatorApp, world: World
) -> None:
    cluster = world.clusters[0]
    async with client_for(app) as client:
        identity = (await client.get("/api/cluster")).json()
        svms, _ = await walk(client, SVMS, {"fields": "uuid,name,state"})
        igroups, _ = await walk(client, IGROUPS, {"fields": "**", "max_records": 5})
        lifs, _ = await walk(client, INTERFACES, {"fields": "ip,location,state,svm"})
        services, _ = await walk(client, ISCSI_SERVICES, {"fields": "target.name"})
    assert (identity["name"], identity["uuid"]) == (cluster.name, cluster.uuid)
    assert identity["version"]["full"]
    assert {s["uuid"] for s in svms} == set(cluster.svms)
    assert {g["uuid"] for g in igroups} == set(cluster.igroups)
    assert all(g["protocol"] == "iscsi" and "initiators" in g for g in igroups)
    assert {lif["ip"]["address"] for lif in lifs} == {
        i.address for i in cluster.interfaces.values()
    }
    assert {s["target"]["name"] for s in services} == {s.target_name for s in cluster.svms.values()}


async def test_each_cluster_answers_on_its_own_port() -> None:
    world = World.generate(clusters=3, sessions=10, seed=2)
    app = create_app(world, password=PASSWORD, base_port=20000)
    assert [app.base_url(i) for i in range(3)] == [
        "http://127.0.0.1:20000",
        "http://127.0.0.1:20001",
        "http://127.0.0.1:20002",
    ]
    for i in range(3):
        async with client_for(app, cluster=i) as client:
            assert (await client.get("/api/cluster")).json()["uuid"] == world.clusters[i].uuid
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://127.0.0.1:20003",
        auth=("admin", PASSWORD),
    ) as nowhere:
        assert (await nowhere.get("/api/cluster")).status_code == 404


async def test_password_rotation_locks_out_the_old_password(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        assert (await client.get("/api/cluster")).status_code == 200
        app.set_password("rotated")
        assert (await client.get("/api/cluster")).status_code == 401
    async with client_for(app, password="rotated") as client:
        assert (await client.get("/api/cluster")).status_code == 200


async def test_record_changes_are_served_after_a_cached_render(
    app: SimulatorApp, world: World
) -> None:
    cluster = world.clusters[0]
    key = cluster.session_keys[0]
    initiator = cluster.sessions[key].initiator
    path = f"{SESSIONS}/{key.svm_uuid}/{key.tpgroup}/{key.tsih}"
    async with client_for(app) as client:
        await client.get(path, params={"fields": "**"})
        cluster.set_alias(initiator, "renamed-ü")
        cluster.update_connection(key, 0, authentication_type="chap")
        body = (await client.get(path, params={"fields": "**"})).json()
    assert body["initiator"]["alias"] == "renamed-ü"
    assert body["connections"][0]["authentication_type"] == "chap"


async def test_unknown_path_is_404_in_the_envelope(app: SimulatorApp) -> None:
    async with client_for(app) as client:
        response = await client.get("/api/storage/volumes")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "3"
