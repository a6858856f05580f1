"""Shared helpers for the simulator's tests: an httpx client on the ASGI app, a page walker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from collector.simulator import SimulatorApp

PASSWORD = "test-password"
JSON_ONLY = {"Accept": "application/json"}


@asynccontextmanager
async def client_for(
    app: SimulatorApp, cluster: int = 0, password: str = PASSWORD
) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=app.base_url(cluster),
        auth=("admin", password),
    ) as client:
        yield client


async def walk(
    client: httpx.AsyncClient, path: str, params: dict[str, Any], max_pages: int = 10_000
) -> tuple[list[dict[str, Any]], list[str]]:
    """Follow next links to the end; return every record and every next href seen."""
    records: list[dict[str, Any]] = []
    hrefs: list[str] = []
    response = await client.get(path, params=params, headers=JSON_ONLY)
    for _ in range(max_pages):
        response.raise_for_status()
        body = response.json()
        records.extend(body["records"])
        href = body.get("_links", {}).get("next", {}).get("href")
        if href is None:
            return records, hrefs
        hrefs.append(href)
        response = await client.get(href, headers=JSON_ONLY)
    raise AssertionError("walk did not end")


def key_of(record: dict[str, Any]) -> tuple[str, str, int]:
    return (record["svm"]["uuid"], record["target_portal_group"], record["tsih"])
