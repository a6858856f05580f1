"""The ONTAP REST API over a simulated world, as a Starlette app.

One app serves every cluster of the world: the cluster is chosen by the port the request
arrived on (`scope["server"]`), because a collector's cluster URL is `https://host:port`
and ONTAP's next links are absolute `/api/...` paths. Cluster i listens on
`base_port + i` unless `bind_ports` says otherwise (the server binds ephemeral ports).

Rendered records are cached as JSON bytes per (record revision, field selection, HAL or
not), so a page of 1,000 cached records costs one `b",".join`; see docs/benchmarks.md.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from collector.simulator import query as q
from collector.simulator.faults import (
    Fault,
    FaultKind,
    FaultPlan,
    SimulatedConnectionRefused,
    SimulatedConnectionReset,
)
from collector.simulator.records import (
    CLUSTER,
    CLUSTER_FIELDS,
    COLLECTIONS,
    Key,
    LookupFailed,
    ResourceSpec,
    render_cluster,
)
from collector.simulator.world import Cluster, World

DEFAULT_USERNAME = "admin"
DEFAULT_PASSWORD = "netapp1!"
HAL = "application/hal+json"
JSON = "application/json"


class OntapError(Exception):
    """An error response in ONTAP's envelope: `{"error": {"message", "code", "target"}}`."""

    def __init__(
        self, status: int, message: str, code: str, target: str = "", headers: Any = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.target = status, message, code, target
        self.headers: dict[str, str] = headers or {}


def error_response(error: OntapError) -> Response:
    body: dict[str, Any] = {"message": error.message, "code": error.code}
    if error.target:
        body["target"] = error.target
    return Response(
        orjson.dumps({"error": body}), error.status, headers=error.headers, media_type=JSON
    )


async def _ontap_error_handler(request: Request, exc: Exception) -> Response:
    if isinstance(exc, q.QueryError):
        return error_response(OntapError(400, exc.message, exc.code, exc.target))
    assert isinstance(exc, OntapError)
    return error_response(exc)


class _BrokenResponse(Response):
    """Sends the headers for the whole body, half of it, then drops the connection."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        await send(
            {
                "type": "http.response.body",
                "body": self.body[: len(self.body) // 2],
                "more_body": True,
            }
        )
        raise SimulatedConnectionReset("simulated: connection reset mid-body")


class RecordCache:
    """Rendered record JSON per (cluster, endpoint, field selection, HAL or not) and key,
    valid while the record's revision is unchanged."""

    def __init__(self) -> None:
        self._tables: dict[tuple[int, str, str, bool], dict[Key, tuple[int, bytes]]] = {}

    def render(
        self,
        cluster: Cluster,
        spec: ResourceSpec,
        keys: Sequence[Key],
        selection: q.FieldSelection,
        hal: bool,
    ) -> list[bytes]:
        """The JSON of each key's record, skipping keys that name nothing."""
        table = self._tables.setdefault((cluster.index, spec.path, selection.canonical, hal), {})
        revision_of = spec.revision
        out: list[bytes] = []
        for key in keys:
            revision = revision_of(cluster, key)
            hit = table.get(key)
            if hit is not None and hit[0] == revision:
                out.append(hit[1])
                continue
            record = spec.render(cluster, key)
            if record is not None:
                rendered = orjson.dumps(q.project(record, selection.tree, hal))
                table[key] = (revision, rendered)
                out.append(rendered)
        return out


class SimulatorApp(Starlette):
    """The ONTAP REST API of every cluster in `world`, with credentials and faults."""

    def __init__(
        self,
        world: World,
        *,
        username: str = DEFAULT_USERNAME,
        password: str = DEFAULT_PASSWORD,
        base_port: int = 8080,
        clock: Callable[[], float] | None = None,
    ) -> None:
        routes = [Route(CLUSTER, self._cluster_endpoint)]
        for spec in COLLECTIONS:
            routes.append(Route(spec.path, self._collection_endpoint(spec)))
            routes.append(Route(spec.path + "/{rest:path}", self._record_endpoint(spec)))
        routes.append(Route("/{rest:path}", self._not_found))
        super().__init__(
            routes=routes,
            exception_handlers={
                OntapError: _ontap_error_handler,
                q.QueryError: _ontap_error_handler,
            },
        )
        self.world = world
        self.cache = RecordCache()
        self._credentials = [(username, password)] * len(world.clusters)
        self._plans = [FaultPlan() for _ in world.clusters]
        self._ports: dict[int, int] = {}
        self.bind_ports([base_port + i for i in range(len(world.clusters))])
        # On the command line simulated time follows the wall clock; tests pass no clock.
        self._clock = clock
        self._clock_origin = clock() if clock else 0.0

    # ---- control surface for tests and the command ---------------------------------

    def bind_ports(self, ports: Sequence[int]) -> None:
        """Serve cluster i on ports[i]."""
        if len(ports) != len(self.world.clusters):
            raise ValueError("one port per cluster")
        self._ports = {port: i for i, port in enumerate(ports)}

    def port_of(self, cluster: int) -> int:
        return next(port for port, i in self._ports.items() if i == cluster)

    def base_url(self, cluster: int = 0, *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port_of(cluster)}"

    def faults(self, cluster: int = 0) -> FaultPlan:
        return self._plans[cluster]

    def inject(self, *faults: Fault, cluster: int = 0) -> None:
        self._plans[cluster].add(*faults)

    def set_password(self, password: str, *, cluster: int | None = None) -> None:
        """Rotate the password (of one cluster or all); old credentials then get 401."""
        for i in range(len(self._credentials)) if cluster is None else [cluster]:
            self._credentials[i] = (self._credentials[i][0], password)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._clock is not None and scope["type"] == "http":
            self.world.advance_to(self._clock() - self._clock_origin)
        await super().__call__(scope, receive, send)

    # ---- request plumbing ----------------------------------------------------------

    def _cluster_of(self, request: Request) -> Cluster:
        server = request.scope.get("server")
        port = server[1] if server else None
        index = self._ports.get(port) if port is not None else None
        if index is None and len(self.world.clusters) == 1 and port is None:
            index = 0
        if index is None:
            raise OntapError(404, f"no simulated cluster on port {port}", "4", "port")
        self._authenticate(request, index)
        return self.world.clusters[index]

    def _authenticate(self, request: Request, index: int) -> None:
        expected_user, expected_password = self._credentials[index]
        user, password = _basic_credentials(request.headers.get("authorization", ""))
        ok_user = hmac.compare_digest(user.encode(), expected_user.encode())
        ok_password = hmac.compare_digest(password.encode(), expected_password.encode())
        if not (ok_user and ok_password):
            raise OntapError(
                401,
                "not authorized for that command",
                "6",
                headers={"WWW-Authenticate": 'Basic realm="ONTAP REST API"'},
            )

    async def _meet_faults(
        self, request: Request, cluster: Cluster, endpoint: str, page: int
    ) -> list[Fault]:
        """Apply the faults that act before a response; return the ones that shape it."""
        faults = self._plans[cluster.index].take(endpoint, page)
        for fault in faults:
            if fault.kind is FaultKind.LATENCY:
                await asyncio.sleep(fault.seconds)
            elif fault.kind is FaultKind.REFUSE:
                raise SimulatedConnectionRefused("simulated: connection refused")
            elif fault.kind is FaultKind.HANG:
                await _wait_for_disconnect(request)
                raise SimulatedConnectionReset("simulated: the client gave up on a hung request")
            elif fault.kind is FaultKind.SERVER_ERROR:
                raise OntapError(fault.status, "simulated server error", "8")
            elif fault.kind is FaultKind.TOO_MANY_REQUESTS:
                raise OntapError(
                    429,
                    "too many requests",
                    "8",
                    headers={"Retry-After": str(fault.retry_after)},
                )
        return faults

    # ---- endpoints -----------------------------------------------------------------

    async def _cluster_endpoint(self, request: Request) -> Response:
        cluster = self._cluster_of(request)
        faults = await self._meet_faults(request, cluster, CLUSTER, 1)
        selection = q.parse_fields(
            request.query_params.get("fields", "**"), CLUSTER_FIELDS, ("name", "uuid")
        )
        hal = _wants_hal(request)
        body = orjson.dumps(q.project(render_cluster(cluster), selection.tree, hal))
        return _respond(body, hal, faults)

    def _collection_endpoint(self, spec: ResourceSpec) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            cluster = self._cluster_of(request)
            params = request.query_params.multi_items()
            faults = await self._meet_faults(request, cluster, spec.path, q.page_number(params))
            query = q.parse_query(params, spec.fields, spec.default_fields)
            hal = _wants_hal(request)
            self_href = _request_href(request) if hal else None
            body = self._collection_body(cluster, spec, query, params, self_href, faults)
            return _respond(body, hal, faults)

        return endpoint

    def _record_endpoint(self, spec: ResourceSpec) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            cluster = self._cluster_of(request)
            faults = await self._meet_faults(request, cluster, spec.path, 1)
            extra = [name for name in request.query_params if name != "fields"]
            if extra:
                raise OntapError(400, f'Unexpected argument "{extra[0]}".', "2", extra[0])
            selection = q.parse_fields(
                request.query_params.get("fields"), spec.fields, spec.default_fields
            )
            try:
                key = spec.key_from_path(cluster, request.path_params["rest"].split("/"))
            except LookupFailed as exc:
                raise OntapError(404, exc.message, exc.code, exc.target) from exc
            hal = _wants_hal(request)
            found = self.cache.render(cluster, spec, [key], selection, hal)
            if not found:
                raise OntapError(404, "entry doesn't exist", "4", spec.default_fields[-1])
            return _respond(found[0], hal, faults)

        return endpoint

    async def _not_found(self, request: Request) -> Response:
        self._cluster_of(request)
        raise OntapError(404, f'API not found: "{request.url.path}"', "3", "path")

    # ---- building a page -----------------------------------------------------------

    def _collection_body(
        self,
        cluster: Cluster,
        spec: ResourceSpec,
        query: q.Query,
        params: Sequence[tuple[str, str]],
        self_href: str | None,
        faults: list[Fault],
    ) -> bytes:
        """One page; `self_href` is None for plain-JSON clients, who get no self links."""
        hal = self_href is not None
        if not query.return_records:
            return orjson.dumps({"num_records": self._count(cluster, spec, query)})
        page = self._choose_page(cluster, spec, query, faults)
        keys = _shape_records(page, faults)
        if any(f.kind is FaultKind.EMPTY_PAGE for f in faults):
            keys = []
            cursor = query.cursor
            page = q.Page([], q.Cursor(cursor.page + 1, cursor.after, cursor.offset), None)
        records = self.cache.render(cluster, spec, keys, query.fields, hal)
        return _page_body(
            records,
            self_href=self_href,
            next_href=(
                q.next_href(spec.path, params, page.next_cursor) if page.next_cursor else None
            ),
        )

    def _choose_page(
        self, cluster: Cluster, spec: ResourceSpec, query: q.Query, faults: list[Fault]
    ) -> q.Page:
        limit = query.max_records
        for fault in faults:
            if fault.kind is FaultKind.SHORT_PAGE:
                limit = min(limit, max(fault.records, 1))
        keys = spec.keys(cluster)
        if query.orderings:
            entries = self._matching(cluster, spec, query, keys)
            return q.offset_page(q.order_records(entries, query.orderings), query.cursor, limit)
        accept = None
        if query.filters:

            def accept(key: Key) -> bool:
                record = spec.render(cluster, key)
                return record is not None and all(f.matches(record) for f in query.filters)

        return q.key_order_page(keys, query.cursor, limit, accept)

    def _matching(
        self, cluster: Cluster, spec: ResourceSpec, query: q.Query, keys: Sequence[Key]
    ) -> list[tuple[Key, dict[str, Any]]]:
        out = []
        for key in keys:
            record = spec.render(cluster, key)
            if record is not None and all(f.matches(record) for f in query.filters):
                out.append((key, record))
        return out

    def _count(self, cluster: Cluster, spec: ResourceSpec, query: q.Query) -> int:
        keys = spec.keys(cluster)
        if not query.filters:
            return len(keys)
        return len(self._matching(cluster, spec, query, keys))


def create_app(
    world: World,
    username: str = DEFAULT_USERNAME,
    password: str = DEFAULT_PASSWORD,
    base_port: int = 8080,
    clock: Callable[[], float] | None = None,
) -> SimulatorApp:
    """The simulator's ASGI app; cluster i answers on `base_port + i`."""
    return SimulatorApp(
        world, username=username, password=password, base_port=base_port, clock=clock
    )


# ---- helpers -------------------------------------------------------------------------


def _basic_credentials(header: str) -> tuple[str, str]:
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic":
        return "", ""
    try:
        user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return "", ""
    return user, password


def _wants_hal(request: Request) -> bool:
    """Plain JSON only when asked for it; ONTAP answers HAL to `*/*` and no Accept."""
    accept = request.headers.get("accept", "")
    return HAL in accept or JSON not in accept


def _request_href(request: Request) -> str:
    query = request.url.query
    return f"{request.url.path}?{query}" if query else request.url.path


def _shape_records(page: q.Page, faults: list[Fault]) -> list[Key]:
    keys = list(page.keys)
    for fault in faults:
        if fault.kind is FaultKind.REPEAT_RECORD and page.previous_key is not None:
            keys.insert(0, page.previous_key)
        elif fault.kind is FaultKind.SKIP_RECORD and keys:
            keys.pop(0)
    return keys


def _page_body(records: list[bytes], self_href: str | None, next_href: str | None) -> bytes:
    links: dict[str, Any] = {}
    if self_href is not None:
        links["self"] = {"href": self_href}
    if next_href is not None:
        links["next"] = {"href": next_href}
    tail: dict[str, Any] = {"num_records": len(records)}
    if links:
        tail["_links"] = links
    # Splice cached record bytes in rather than re-serialising them.
    return b'{"records":[' + b",".join(records) + b"]," + orjson.dumps(tail)[1:]


def _respond(body: bytes, hal: bool, faults: list[Fault]) -> Response:
    media_type = HAL if hal else JSON
    for fault in faults:
        if fault.kind is FaultKind.TRUNCATED_JSON:
            return Response(body[: len(body) // 2], media_type=media_type)
        if fault.kind is FaultKind.RESET:
            return _BrokenResponse(body, media_type=media_type)
    return Response(body, media_type=media_type)


async def _wait_for_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass
