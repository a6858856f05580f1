"""How much a simulated ONTAP page costs to serve, next to what a client spends parsing it.

    .venv/bin/python benchmarks/bench_simulator.py [--quick]

For 1 cluster of 100,000 sessions and 200 clusters of 500, it walks the sessions
collection with `fields=**` and `max_records=1000` (what a collector asks for) and prints
milliseconds per 1,000-record page: served in-process through the ASGI app with the
record cache cold (first walk renders every record) and warm (later walks), served over
loopback HTTP by uvicorn (warm), and `orjson.loads` of the same page, the least a
collector must spend on it.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import orjson

from collector.simulator import SESSIONS, SimulatorApp, World, create_app
from collector.simulator.server import SimulatorServer

PASSWORD = "bench"
PARAMS = {"fields": "**", "max_records": "1000"}
HEADERS = {"Accept": "application/json"}


@dataclass
class Row:
    scenario: str
    generate_s: float
    pages: int
    records_per_page: float
    cold_ms: float
    warm_ms: float
    http_ms: float
    loads_ms: float
    page_kib: float
    rss_mib: float


def _per_1000(seconds: list[float], records: list[int]) -> float:
    return 1000 * 1000 * sum(seconds) / max(sum(records), 1)


async def _walk_in_process(app: SimulatorApp, cluster: int) -> tuple[list[float], list[bytes]]:
    """Time each page of one walk; return the timings and the page bodies."""
    timings: list[float] = []
    bodies: list[bytes] = []
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url=app.base_url(cluster),
        auth=("admin", PASSWORD),
        headers=HEADERS,
    ) as client:
        url: str | None = SESSIONS
        params: dict[str, str] | None = PARAMS
        while url:
            started = time.perf_counter()
            response = await client.get(url, params=params)
            timings.append(time.perf_counter() - started)
            bodies.append(response.content)
            url = response.json().get("_links", {}).get("next", {}).get("href")
            params = None
    return timings, bodies


def _walk_over_http(base_url: str) -> list[float]:
    timings: list[float] = []
    with httpx.Client(base_url=base_url, auth=("admin", PASSWORD), headers=HEADERS) as client:
        url: str | None = SESSIONS
        params: dict[str, str] | None = PARAMS
        while url:
            started = time.perf_counter()
            response = client.get(url, params=params)
            timings.append(time.perf_counter() - started)
            url = response.json().get("_links", {}).get("next", {}).get("href")
            params = None
    return timings


def _time_loads(bodies: list[bytes]) -> list[float]:
    timings = []
    for body in bodies:
        started = time.perf_counter()
        orjson.loads(body)
        timings.append(time.perf_counter() - started)
    return timings


def _records(bodies: list[bytes]) -> list[int]:
    return [orjson.loads(b)["num_records"] for b in bodies]


def measure(scenario: str, clusters: int, sessions: int, http_clusters: int) -> Row:
    started = time.perf_counter()
    world = World.generate(clusters=clusters, sessions=sessions, seed=1)
    generate_s = time.perf_counter() - started
    app = create_app(world, password=PASSWORD)

    cold: list[float] = []
    warm: list[float] = []
    bodies: list[bytes] = []
    for i in range(clusters):
        cold += asyncio.run(_walk_in_process(app, i))[0]
    for i in range(clusters):
        timings, pages = asyncio.run(_walk_in_process(app, i))
        warm += timings
        bodies += pages
    counts = _records(bodies)
    with SimulatorServer(app, port=0) as server:
        http = [t for i in range(http_clusters) for t in _walk_over_http(server.base_url(i))]
    http_counts = counts[: len(http)]
    rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return Row(
        scenario,
        generate_s,
        len(bodies),
        statistics.mean(counts),
        _per_1000(cold, counts),
        _per_1000(warm, counts),
        _per_1000(http, http_counts),
        _per_1000(_time_loads(bodies), counts),
        statistics.mean(len(b) for b in bodies) / 1024,
        rss_mib,
    )


def print_table(rows: list[Row]) -> None:
    columns: list[tuple[str, Callable[[Row], str]]] = [
        ("scenario", lambda r: r.scenario),
        ("generate s", lambda r: f"{r.generate_s:.1f}"),
        ("pages", lambda r: str(r.pages)),
        ("rec/page", lambda r: f"{r.records_per_page:.0f}"),
        ("KiB/page", lambda r: f"{r.page_kib:.0f}"),
        ("cold ms/1k", lambda r: f"{r.cold_ms:.1f}"),
        ("warm ms/1k", lambda r: f"{r.warm_ms:.2f}"),
        ("http ms/1k", lambda r: f"{r.http_ms:.2f}"),
        ("orjson.loads ms/1k", lambda r: f"{r.loads_ms:.2f}"),
        ("peak RSS MiB", lambda r: f"{r.rss_mib:.0f}"),
    ]
    cells = [[name for name, _ in columns]] + [[fmt(r) for _, fmt in columns] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    for n, row in enumerate(cells):
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
        if n == 0:
            print("  ".join("-" * w for w in widths))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small worlds, for a smoke run")
    quick = parser.parse_args().quick
    scenarios = (
        [("1 x 5,000", 1, 5_000, 1), ("20 x 500", 20, 500, 5)]
        if quick
        else [("1 x 100,000", 1, 100_000, 1), ("200 x 500", 200, 500, 20)]
    )
    # Peak RSS only grows, so the smaller scenario runs first and each figure is its own.
    rows = [measure(*s) for s in reversed(scenarios)]
    print_table(rows)


if __name__ == "__main__":
    main()
