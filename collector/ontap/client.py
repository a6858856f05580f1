"""The ONTAP REST client: the only module that talks to a cluster.

One `OntapClient` per cluster and poll, over one httpx connection pool (ONTAP limits
concurrent REST connections per client address, so it stays at two).

Exceptions, all carrying the page they happened on (1-based, None for /api/cluster):

    OntapError                 any failure to get a complete answer
    ├── OntapUnreachable       connect errors, resets and timeouts, after the retries
    ├── OntapTLSError          the server's certificate is not trusted (never retried)
    ├── OntapHTTPError         an error status; carries ONTAP's error code and message
    └── OntapBadResponse       too large, not JSON, not ONTAP's envelope, a looping next link

Retries: connect errors, timeouts, resets, 429 and 5xx are retried with exponential backoff
and full jitter, a bounded number of times. Nothing else is: a 401 or a bad page will not
get better by asking again.
"""

from __future__ import annotations

import asyncio
import functools
import os
import random
import ssl
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson

from collector import __version__
from collector.config import ClusterConfig
from collector.ontap.resources import (
    CLUSTER_PATH,
    JSON,
    SESSIONS_PATH,
    ClusterIdentity,
    EnvelopeError,
    Page,
    cluster_query,
    describe_error,
    parse_cluster,
    parse_page,
    sessions_query,
)

_RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
_CHUNK = 256 * 1024


class OntapError(Exception):
    def __init__(self, message: str, *, page: int | None = None) -> None:
        self.page = page
        where = f"page {page}: " if page is not None else ""
        super().__init__(f"{where}{message}")


class OntapUnreachable(OntapError):
    pass


class OntapTLSError(OntapError):
    pass


class OntapHTTPError(OntapError):
    def __init__(self, message: str, *, status: int, code: str | None, page: int | None) -> None:
        self.status = status
        self.code = code
        super().__init__(message, page=page)


class OntapBadResponse(OntapError):
    pass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently a request is retried. `sleep` and `rng` are seams for tests."""

    retries: int = 3
    base_delay: float = 0.5
    max_delay: float = 30.0
    sleep: Callable[[float], Awaitable[None]] = field(default=asyncio.sleep)
    rng: Callable[[], float] = field(default=random.random)

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Full jitter (AWS style): spreads many collectors retrying one cluster."""
        if retry_after is not None:
            return min(self.max_delay, retry_after)
        return float(self.rng()) * min(self.max_delay, self.base_delay * (1 << attempt))


class OntapClient:
    """Fetches one cluster's identity and walks its iSCSI sessions page by page."""

    def __init__(
        self,
        cluster: ClusterConfig,
        password: str | None,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self._cluster = cluster
        self._retry = retry or RetryPolicy(retries=cluster.retries)
        self._origin = _origin(cluster.url)
        self._http = httpx.AsyncClient(
            base_url=cluster.url,
            auth=httpx.BasicAuth(cluster.username, password)
            if cluster.username and password is not None
            else None,
            verify=tls_context(cluster) if transport is None else True,
            timeout=httpx.Timeout(cluster.read_timeout, connect=cluster.connect_timeout),
            limits=httpx.Limits(max_connections=2, max_keepalive_connections=2),
            headers={"Accept": JSON, "User-Agent": f"iscsi-audit/{__version__}"},
            follow_redirects=False,
            transport=transport,
        )

    async def __aenter__(self) -> OntapClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._http.aclose()

    async def cluster_identity(self) -> ClusterIdentity:
        body = _decode(await self._get_ok(CLUSTER_PATH, cluster_query(), page=None), None)
        try:
            return parse_cluster(body)
        except EnvelopeError as exc:
            raise OntapBadResponse(f"{CLUSTER_PATH}: {exc}") from None

    async def session_pages(self) -> AsyncGenerator[Page, None]:
        """Follow `_links.next` as an opaque href until it is absent; refuse a loop."""
        href: str | None = SESSIONS_PATH
        params: dict[str, str] | None = sessions_query(self._cluster.max_records)
        visited: set[str] = set()
        number = 0
        while href is not None:
            number += 1
            body = await self._get_ok(href, params, page=number)
            try:
                page = parse_page(body)
            except EnvelopeError as exc:
                raise OntapBadResponse(str(exc), page=number) from None
            yield page
            href, params = page.next_href, None
            if href is not None:
                self._check_same_origin(href, number)
                if href in visited:
                    raise OntapBadResponse(f"next link repeats ({href}): paging loop", page=number)
                visited.add(href)

    def _check_same_origin(self, href: str, page: int) -> None:
        # the client sends credentials with every request: never follow them elsewhere
        parts = urlsplit(href)
        if parts.scheme and _origin(href) != self._origin:
            raise OntapBadResponse(f"next link points to another server: {parts.netloc}", page=page)

    async def _get_ok(self, url: str, params: dict[str, str] | None, *, page: int | None) -> bytes:
        """The body of a 2xx answer, retrying what may pass; raise for the rest."""
        attempt = 0
        while True:
            retry_after = None
            try:
                status, reason, body, retry_after = await self._get(url, params, page)
            except OntapUnreachable:
                if attempt >= self._retry.retries:
                    raise
            else:
                if status < 300:
                    return body
                if status not in _RETRY_STATUSES or attempt >= self._retry.retries:
                    raise _http_error(status, reason, body, page)
            await self._retry.sleep(self._retry.delay(attempt, retry_after))
            attempt += 1

    async def _get(
        self, url: str, params: dict[str, str] | None, page: int | None
    ) -> tuple[int, str, bytes, float | None]:
        try:
            async with self._http.stream("GET", url, params=params) as response:
                body = await _read_limited(response, self._cluster.max_page_bytes, page)
                return (response.status_code, response.reason_phrase, body, _retry_after(response))
        except httpx.TransportError as exc:
            if _is_certificate_error(exc):
                raise OntapTLSError(
                    f"TLS certificate of {self._cluster.url} not trusted ({_root_message(exc)});"
                    " set ca_file to the cluster's CA",
                    page=page,
                ) from None
            raise OntapUnreachable(
                f"{type(exc).__name__}: {_root_message(exc)}", page=page
            ) from None


async def _read_limited(response: httpx.Response, limit: int, page: int | None) -> bytes:
    declared = response.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise OntapBadResponse(
            f"response of {declared} bytes is over the {limit} byte limit", page=page
        )
    if declared is not None and declared.isdigit():
        return await response.aread()  # the length is known and allowed: one read
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes(_CHUNK):
        size += len(chunk)
        if size > limit:
            raise OntapBadResponse(f"response is over the {limit} byte limit", page=page)
        chunks.append(chunk)
    return b"".join(chunks)


def _decode(body: bytes, page: int | None) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OntapBadResponse(f"not JSON ({exc})", page=page) from None


def _http_error(status: int, reason: str, body: bytes, page: int | None) -> OntapHTTPError:
    try:
        decoded = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        decoded = None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return OntapHTTPError(
        describe_error(status, reason, decoded),
        status=status,
        code=str(code) if code is not None else None,
        page=page,
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def tls_context(cluster: ClusterConfig) -> ssl.SSLContext:
    """The TLS settings of one cluster: its CA bundle, its client certificate, or no checks.

    Building one reads the system's CA store (about 15 ms of CPU), once per poll of every
    cluster without a cache; it is rebuilt when one of its files changes on disk.
    """
    files = (cluster.ca_file, cluster.cert_file, cluster.key_file)
    stamps = tuple(os.stat(f).st_mtime_ns if f else None for f in files)
    return _tls_context(cluster.verify, *files, stamps)


@functools.lru_cache(maxsize=256)
def _tls_context(
    verify: bool,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    stamps: tuple[int | None, ...],
) -> ssl.SSLContext:
    if verify:
        context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    else:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if cert_file and key_file:
        context.load_cert_chain(str(cert_file), str(key_file))
    return context


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def _is_certificate_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ssl.SSLCertVerificationError):
            return True
        seen = seen.__cause__ or seen.__context__
    return "CERTIFICATE_VERIFY_FAILED" in str(exc)


def _root_message(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__
