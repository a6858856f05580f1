"""Scripted faults, per endpoint and per page, as a collector meets them through httpx."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from collector.simulator import (
    SESSIONS,
    SVMS,
    Fault,
    FaultKind,
    FaultPlan,
    SimulatorApp,
    World,
    create_app,
)
from tests.simulator_fixtures import JSON_ONLY, PASSWORD, client_for, key_of, walk

PAGE: dict[str, str | int] = {"fields": "tsih", "max_records": 10}


@pytest.fixture
def app() -> SimulatorApp:
    return create_app(World.generate(sessions=40, seed=5), password=PASSWORD, base_port=18500)


async def test_server_error_on_page_two_fires_once_and_the_retry_succeeds(
    app: SimulatorApp,
) -> None:
    app.inject(Fault.server_error(502, endpoint=SESSIONS, page=2))
    async with client_for(app) as client:
        first = (await client.get(SESSIONS, params=PAGE, headers=JSON_ONLY)).json()
        href = first["_links"]["next"]["href"]
        failed = await client.get(href, headers=JSON_ONLY)
        retried = await client.get(href, headers=JSON_ONLY)
    assert failed.status_code == 502
    assert set(failed.json()["error"]) >= {"message", "code"}
    assert retried.status_code == 200
    assert app.faults(0).pending == []


async def test_too_many_requests_carries_retry_after(app: SimulatorApp) -> None:
    app.inject(Fault.too_many_requests(retry_after=7))
    async with client_for(app) as client:
        response = await client.get(SESSIONS)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "7"


async def test_faults_only_hit_their_endpoint(app: SimulatorApp) -> None:
    app.inject(Fault.server_error(endpoint=SVMS, times=None))
    async with client_for(app) as client:
        assert (await client.get(SESSIONS)).status_code == 200
        assert (await client.get(SVMS)).status_code == 503
        assert (await client.get(SVMS)).status_code == 503


async def test_permanent_fault_keeps_firing_until_cleared(app: SimulatorApp) -> None:
    app.inject(Fault.server_error(times=None))
    async with client_for(app) as client:
        statuses = [(await client.get(SESSIONS)).status_code for _ in range(3)]
        app.faults(0).clear()
        statuses.append((await client.get(SESSIONS)).status_code)
    assert statuses == [503, 503, 503, 200]


async def test_connection_reset_mid_body_raises_a_transport_error(app: SimulatorApp) -> None:
    app.inject(Fault.reset(page=1))
    async with client_for(app) as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.get(SESSIONS, params=PAGE)


async def test_truncated_json_is_a_complete_response_that_does_not_parse(
    app: SimulatorApp,
) -> None:
    app.inject(Fault.truncated_json())
    async with client_for(app) as client:
        response = await client.get(SESSIONS, params=PAGE)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


async def test_refused_connection_raises_connect_error(app: SimulatorApp) -> None:
    app.inject(Fault.refuse())
    async with client_for(app) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get("/api/cluster")


async def test_hung_cluster_never_answers(app: SimulatorApp) -> None:
    app.inject(Fault.hang())
    async with client_for(app) as client:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(client.get("/api/cluster"), timeout=0.2)


async def test_latency_delays_but_answers(app: SimulatorApp) -> None:
    app.inject(Fault.latency(0.05))
    async with client_for(app) as client:
        assert (await client.get("/api/cluster")).status_code == 200


async def test_repeated_record_appears_on_two_pages(app: SimulatorApp) -> None:
    app.inject(Fault.repeat_record(endpoint=SESSIONS, page=3))
    async with client_for(app) as client:
        records, _ = await walk(client, SESSIONS, PAGE)
    keys = [key_of(r) for r in records]
    assert len(keys) == 41
    assert keys[20] == keys[19]
    assert len(set(keys)) == 40


async def test_skipped_record_is_missing_from_the_walk(app: SimulatorApp) -> None:
    app.inject(Fault.skip_record(endpoint=SESSIONS, page=2))
    async with client_for(app) as client:
        records, _ = await walk(client, SESSIONS, PAGE)
    assert len({key_of(r) for r in records}) == 39


async def test_empty_page_has_a_next_link_that_carries_on(app: SimulatorApp) -> None:
    app.inject(Fault.empty_page(page=2))
    async with client_for(app) as client:
        first = (await client.get(SESSIONS, params=PAGE, headers=JSON_ONLY)).json()
        empty = (await client.get(first["_links"]["next"]["href"], headers=JSON_ONLY)).json()
        records, _ = await walk(client, SESSIONS, PAGE)
    assert empty["records"] == [] and empty["num_records"] == 0
    assert empty["_links"]["next"]["href"] != first["_links"]["next"]["href"]
    assert len({key_of(r) for r in records}) == 40


async def test_short_page_ends_early_with_a_next_link_like_return_timeout(
    app: SimulatorApp,
) -> None:
    app.inject(Fault.short_page(3, page=1))
    async with client_for(app) as client:
        body = (await client.get(SESSIONS, params=PAGE, headers=JSON_ONLY)).json()
        records, _ = await walk(client, SESSIONS, PAGE)
    assert body["num_records"] == 3 and "next" in body["_links"]
    assert len(records) == 40


async def test_faults_are_per_cluster() -> None:
    app = create_app(World.generate(clusters=2, sessions=5, seed=1), password=PASSWORD)
    app.inject(Fault.server_error(times=None), cluster=1)
    async with client_for(app, cluster=0) as healthy, client_for(app, cluster=1) as broken:
        assert (await healthy.get("/api/cluster")).status_code == 200
        assert (await broken.get("/api/cluster")).status_code == 503


def test_fault_plan_counts_uses_and_matches_endpoint_and_page() -> None:
    plan = FaultPlan()
    twice = Fault.server_error(endpoint=SESSIONS, page=2, times=2)
    plan.add(twice)
    assert plan.take(SESSIONS, 1) == []
    assert plan.take(SVMS, 2) == []
    assert [f.kind for f in plan.take(SESSIONS, 2)] == [FaultKind.SERVER_ERROR]
    assert plan.pending == [twice]
    plan.take(SESSIONS, 2)
    assert plan.pending == []
