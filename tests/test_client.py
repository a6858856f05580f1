"""The real ONTAP client against an in-process ONTAP: auth, paging, retries and errors run;
only the socket is gone (and for TLS, not even that)."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import trustme
import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.config import ClusterConfig
from collector.ontap.client import (
    OntapBadResponse,
    OntapClient,
    OntapHTTPError,
    OntapTLSError,
    OntapUnreachable,
    RetryPolicy,
)
from collector.ontap.resources import SESSION_FIELDS
from tests.ontap_pages import (
    FakeOntap,
    connect_error,
    error,
    raw,
    session_record,
    status,
)

CLUSTER = ClusterConfig(name="lab", url="https://cluster1.example.com", username="admin")


class Sleeps:
    """Records backoff delays instead of sleeping."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def client(ontap: FakeOntap, *, retries: int = 3, sleeps: Sleeps | None = None,
           cluster: ClusterConfig = CLUSTER, password: str = "secret") -> OntapClient:
    policy = RetryPolicy(retries=retries, sleep=sleeps or Sleeps(), rng=lambda: 1.0)
    return OntapClient(cluster, password, transport=ontap.transport(), retry=policy)


async def walk(ontap: FakeOntap, **kwargs) -> list[list[dict]]:
    async with client(ontap, **kwargs) as c:
        return [page.records async for page in c.session_pages()]


async def test_first_request_names_every_field_sorted_with_max_records() -> None:
    ontap = FakeOntap(pages=[[session_record(1)]])

    await walk(ontap)

    [request] = ontap.requests
    query = parse_qs(urlsplit(str(request.url)).query)
    assert query["fields"] == [",".join(sorted(SESSION_FIELDS))]
    assert query["max_records"] == ["1000"]
    assert request.headers["accept"] == "application/json"


async def test_next_link_is_followed_as_an_opaque_href_until_absent() -> None:
    ontap = FakeOntap(pages=[[session_record(1)], [], [session_record(2)], [session_record(3)]])

    pages = await walk(ontap)

    assert [len(p) for p in pages] == [1, 0, 1, 1]
    later = [str(r.url) for r in ontap.requests[1:]]
    assert later[0] == ("https://cluster1.example.com/api/protocols/san/iscsi/sessions"
                        "?start.token=p2&max_records=2")
    assert all("fields=" not in url for url in later)  # not appended again


async def test_a_repeating_next_link_stops_the_walk_with_an_error() -> None:
    ontap = FakeOntap(pages=[[session_record(1)], [session_record(2)], [session_record(3)]],
                      next_href=lambda i: "/api/protocols/san/iscsi/sessions?start.token=p2")

    with pytest.raises(OntapBadResponse, match="page 2: next link repeats"):
        await walk(ontap)


async def test_a_next_link_to_another_server_is_refused() -> None:
    ontap = FakeOntap(pages=[[session_record(1)], [session_record(2)]],
                      next_href=lambda i: "https://evil.example.net/api/x?start.token=p2")

    with pytest.raises(OntapBadResponse, match=r"another server: evil\.example\.net"):
        await walk(ontap)


@pytest.mark.parametrize("responder", [status(503), status(502), status(429), connect_error])
async def test_transient_failures_are_retried_with_backoff(responder) -> None:
    ontap = FakeOntap(pages=[[session_record(1)], [session_record(2)]],
                      faults={2: [responder, responder]})
    sleeps = Sleeps()

    pages = await walk(ontap, sleeps=sleeps)

    assert len(pages) == 2
    assert sleeps.delays == [0.5, 1.0]  # exponential; rng pinned to the top of the jitter


async def test_retry_after_is_honoured_for_429() -> None:
    busy = lambda request: httpx.Response(429, headers={"retry-after": "7"})  # noqa: E731
    ontap = FakeOntap(pages=[[session_record(1)]], faults={1: [busy]})
    sleeps = Sleeps()

    await walk(ontap, sleeps=sleeps)

    assert sleeps.delays == [7.0]


async def test_retries_are_bounded() -> None:
    ontap = FakeOntap(pages=[[session_record(1)], [session_record(2)]],
                      faults={2: [status(503)] * 10})

    with pytest.raises(OntapHTTPError, match="page 2: HTTP 503, ONTAP error 0: server busy"):
        await walk(ontap, retries=2)
    assert len(ontap.requests) == 1 + 3


async def test_401_is_not_retried_and_says_so() -> None:
    ontap = FakeOntap(pages=[[session_record(1)]])

    with pytest.raises(OntapHTTPError) as caught:
        async with client(ontap, password="wrong") as c:
            await c.cluster_identity()

    assert caught.value.status == 401
    assert str(caught.value) == "HTTP 401, ONTAP error 6691623: User is not authorized"
    assert len(ontap.requests) == 1


async def test_ontap_error_envelope_becomes_a_clear_message() -> None:
    denied = lambda request: error(403, "6", "permission denied")  # noqa: E731
    ontap = FakeOntap(pages=[[session_record(1)]], faults={1: [denied]})

    with pytest.raises(OntapHTTPError, match="page 1: HTTP 403, ONTAP error 6: permission denied"):
        await walk(ontap)


@pytest.mark.parametrize(("body", "message"), [
    (b'{"records": [{"tsih": 1', "page 1: not JSON"),
    (b"<html>maintenance</html>", "page 1: not JSON"),
    (b'[1, 2, 3]', "page 1: expected a JSON object with records"),
    (b'{"num_records": 3}', "page 1: no records list"),
    (b'{"records": [], "_links": {"next": {}}}', "page 1: _links.next has no href"),
])
async def test_hostile_pages_fail_naming_the_page_and_the_reason(body: bytes, message: str) -> None:
    ontap = FakeOntap(pages=[[session_record(1)]], faults={1: [raw(body)]})

    with pytest.raises(OntapBadResponse, match=message):
        await walk(ontap)


async def test_a_page_over_the_size_limit_fails() -> None:
    ontap = FakeOntap(pages=[[session_record(n) for n in range(50)]])
    small = ClusterConfig(name="lab", url="https://cluster1.example.com", username="admin",
                          max_page_bytes=4096)

    with pytest.raises(OntapBadResponse, match=r"page 1: response .*over the 4096 byte limit"):
        await walk(ontap, cluster=small)


async def test_cluster_identity_reads_uuid_name_and_version() -> None:
    async with client(FakeOntap()) as c:
        identity = await c.cluster_identity()

    assert (identity.name, identity.version) == ("cluster1", "NetApp Release 9.14.1")


async def test_unreachable_after_retries() -> None:
    ontap = FakeOntap(cluster_faults=[connect_error] * 5)

    with pytest.raises(OntapUnreachable, match="ConnectError: connection refused"):
        async with client(ontap, retries=1) as c:
            await c.cluster_identity()


# --- TLS, for real: a uvicorn server on loopback with a certificate from a private CA ----


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_IDENTITY_APP = Starlette(routes=[Route("/api/cluster", lambda request: JSONResponse(
    {"name": "tls1", "uuid": "8c6b9e0a-4a2f-11ee-9f7e-005056b0a0ff"}))])


@contextmanager
def _https_server(folder: Path, *, client_ca: trustme.CA | None = None) -> Iterator[
        tuple[str, Path]]:
    """An HTTPS ONTAP stand-in on loopback; yields its URL and the CA file that trusts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    ca_file, cert_file, key_file = folder / "ca.pem", folder / "cert.pem", folder / "key.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    cert.private_key_pem.write_to_path(str(key_file))
    cert.cert_chain_pems[0].write_to_path(str(cert_file))
    extra: dict[str, object] = {}
    if client_ca is not None:
        client_ca.cert_pem.write_to_path(str(folder / "client-ca.pem"))
        extra = {"ssl_ca_certs": str(folder / "client-ca.pem"),
                 "ssl_cert_reqs": ssl.CERT_REQUIRED}
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(
        _IDENTITY_APP, host="127.0.0.1", port=port, log_level="critical",
        ssl_certfile=str(cert_file), ssl_keyfile=str(key_file), **extra))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.02)
    try:
        yield f"https://127.0.0.1:{port}", ca_file
    finally:
        server.should_exit = True
        thread.join(5)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    with _https_server(tmp_path_factory.mktemp("tls")) as served:
        yield served


async def test_an_untrusted_certificate_fails_without_retrying(tls_cluster) -> None:
    url, _ = tls_cluster
    cluster = ClusterConfig(name="tls", url=url, username="admin")
    sleeps = Sleeps()

    with pytest.raises(OntapTLSError, match=r"not trusted .*set ca_file"):
        async with OntapClient(cluster, "pw", retry=RetryPolicy(sleep=sleeps)) as c:
            await c.cluster_identity()
    assert sleeps.delays == []


async def test_the_cluster_ca_file_makes_the_certificate_trusted(tls_cluster) -> None:
    url, ca_file = tls_cluster
    cluster = ClusterConfig(name="tls", url=url, username="admin", ca_file=ca_file)

    async with OntapClient(cluster, "pw") as c:
        identity = await c.cluster_identity()

    assert identity.name == "tls1"


async def test_verify_false_accepts_any_certificate(tls_cluster) -> None:
    url, _ = tls_cluster
    cluster = ClusterConfig(name="tls", url=url, username="admin", verify=False)

    async with OntapClient(cluster, "pw") as c:
        assert (await c.cluster_identity()).name == "tls1"


async def test_client_certificate_authentication(tmp_path: Path) -> None:
    client_ca = trustme.CA()
    leaf = client_ca.issue_cert(common_name="iscsi_audit")
    cert_file, key_file = tmp_path / "client.pem", tmp_path / "client-key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert_file))
    leaf.private_key_pem.write_to_path(str(key_file))

    with _https_server(tmp_path, client_ca=client_ca) as (url, ca_file):
        with_cert = ClusterConfig(name="mtls", url=url, ca_file=ca_file,
                                  cert_file=cert_file, key_file=key_file)
        without = ClusterConfig(name="mtls", url=url, ca_file=ca_file, username="admin",
                                retries=0)
        async with OntapClient(with_cert, None) as c:
            assert (await c.cluster_identity()).name == "tls1"
        with pytest.raises(OntapUnreachable):
            async with OntapClient(without, "pw") as c:
                await c.cluster_identity()
