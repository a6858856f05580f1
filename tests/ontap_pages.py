"""Exact ONTAP answers for tests that need a page-by-page script (an in-process handler for
httpx.MockTransport: the real client runs, only the socket is gone). Realistic worlds come
from the simulator; this is for pinning one situation down precisely.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson

CLUSTER_UUID = "8c6b9e0a-4a2f-11ee-9f7e-005056b0a001"
SVM_UUID = "02c9e252-41be-11e9-81d5-00a0986138f7"

# The example record of ONTAP's reference page (get-iscsi-session.txt), verbatim
SEED_RECORD: dict[str, Any] = {
    "_links": {"self": {"href": "/api/resourcelink"}},
    "connections": [{
        "_links": {"next": {"href": "/api/resourcelink"}, "self": {"href": "/api/resourcelink"}},
        "authentication_type": "string",
        "cid": 0,
        "initiator_address": {"address": "10.10.10.7", "port": 55432},
        "interface": {
            "_links": {"self": {"href": "/api/resourcelink"}},
            "ip": {"address": "10.10.10.7", "port": 3260},
            "name": "lif1",
            "uuid": "1cd8a442-86d1-11e0-ae1c-123478563412",
        },
    }],
    "igroups": [{"_links": {"self": {"href": "/api/resourcelink"}}, "name": "igroup1",
                 "uuid": "4ea7a442-86d1-11e0-ae1c-123478563412"}],
    "initiator": {"alias": "initiator_alias1", "name": "iqn.1992-01.example.com:string"},
    "isid": "61:62:63:64:65:00",
    "svm": {"_links": {"self": {"href": "/api/resourcelink"}}, "name": "svm1",
            "uuid": "02c9e252-41be-11e9-81d5-00a0986138f7"},
    "target_portal_group": "tpgroup1",
    "target_portal_group_tag": 0,
    "tsih": 0,
}


def session_record(
    n: int,
    *,
    tsih: int | None = None,
    isid: str | None = None,
    initiator: str | None = None,
    alias: str | None = "host",
    tpg: str = "lif1",
    auth: str = "chap",
    address: str | None = None,
    lif_address: str = "192.0.2.10",
    cids: Sequence[int] = (1,),
    igroups: Sequence[str] = ("ig-linux",),
) -> dict[str, Any]:
    """A realistic session record; `n` makes the defaults of one host distinct."""
    return {
        "svm": {"uuid": SVM_UUID, "name": "svm1"},
        "target_portal_group": tpg,
        "target_portal_group_tag": 1000,
        "tsih": tsih if tsih is not None else n,
        "isid": isid or f"40:00:01:37:00:{n % 256:02x}",
        "initiator": {"name": initiator or f"iqn.1994-05.com.redhat:host{n}",
                      **({"alias": alias} if alias is not None else {})},
        "igroups": [{"uuid": igroup_uuid(name), "name": name} for name in igroups],
        "connections": [{
            "cid": cid,
            "authentication_type": auth,
            "initiator_address": {"address": address or f"198.51.100.{n % 250 + 1}",
                                  "port": 50000 + cid},
            "interface": {"uuid": "1cd8a442-86d1-11e0-ae1c-123478563412", "name": tpg,
                          "ip": {"address": lif_address, "port": 3260}},
        } for cid in cids],
    }


def igroup_uuid(name: str) -> str:
    """A stable uuid per igroup name, so tests can rename an igroup by keeping its uuid."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"igroup:{name}"))


Responder = Callable[[httpx.Request], httpx.Response]


@dataclass
class FakeOntap:
    """Serves /api/cluster and the sessions collection from a script of pages.

    `pages` is a list of record lists; page i links to page i+1. `faults[i]` (1-based page
    number) replaces that page's answer, once per entry in the list.
    """

    pages: list[list[dict[str, Any]]] = field(default_factory=lambda: [[]])
    username: str = "admin"
    password: str = "secret"
    cluster_uuid: str = CLUSTER_UUID
    faults: dict[int, list[Responder]] = field(default_factory=dict)
    cluster_faults: list[Responder] = field(default_factory=list)
    requests: list[httpx.Request] = field(default_factory=list)
    next_href: Callable[[int], str] = field(
        default=lambda i: f"/api/protocols/san/iscsi/sessions?start.token=p{i}&max_records=2")

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def set_records(self, records: list[dict[str, Any]], per_page: int = 1000) -> None:
        self.pages = [records[i:i + per_page] for i in range(0, len(records), per_page)] or [[]]

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != httpx.BasicAuth(
                self.username, self.password)._auth_header:
            return error(401, "6691623", "User is not authorized")
        path = urlsplit(str(request.url)).path
        if path == "/api/cluster":
            if self.cluster_faults:
                return self.cluster_faults.pop(0)(request)
            return json_response({"name": "cluster1", "uuid": self.cluster_uuid,
                                  "version": {"full": "NetApp Release 9.14.1"}})
        if path == "/api/protocols/san/iscsi/sessions":
            number = self._page_number(request)
            if self.faults.get(number):
                return self.faults[number].pop(0)(request)
            body: dict[str, Any] = {"records": copy.deepcopy(self.pages[number - 1]),
                                    "num_records": len(self.pages[number - 1])}
            if number < len(self.pages):
                body["_links"] = {"next": {"href": self.next_href(number + 1)}}
            return json_response(body)
        return error(404, "4", "entry doesn't exist")

    @staticmethod
    def _page_number(request: httpx.Request) -> int:
        token = parse_qs(urlsplit(str(request.url)).query).get("start.token", ["p1"])[0]
        return int(token[1:])


def json_response(body: Any, status: int = 200) -> httpx.Response:
    return httpx.Response(status, content=orjson.dumps(body),
                          headers={"content-type": "application/json"})


def error(status: int, code: str, message: str) -> httpx.Response:
    return json_response({"error": {"message": message, "code": code}}, status)


def status(code: int) -> Responder:
    return lambda request: error(code, "0", "server busy") if code >= 500 else httpx.Response(code)


def raw(content: bytes, code: int = 200) -> Responder:
    return lambda request: httpx.Response(code, content=content)


def connect_error(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)
