"""ONTAP's representation of the simulated world: one full (`fields=**`, HAL) record per object.

Each endpoint is a `ResourceSpec`: its path, the fields it knows, the fields a request
without `fields` returns, how to list its keys in ONTAP's order and how to render one
record. Records always carry their `_links`; `query.project` drops them for clients that
ask for plain `application/json`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from collector.simulator.world import Cluster, Host, Igroup, Interface, Session, SessionKey, Svm

Record = dict[str, Any]
Key = tuple[Any, ...]

CLUSTER = "/api/cluster"
SESSIONS = "/api/protocols/san/iscsi/sessions"
IGROUPS = "/api/protocols/san/igroups"
INTERFACES = "/api/network/ip/interfaces"
SVMS = "/api/svm/svms"
ISCSI_SERVICES = "/api/protocols/san/iscsi/services"


class LookupFailed(Exception):
    """A single-record path names nothing; carries ONTAP's error code and target."""

    def __init__(self, message: str, code: str, target: str) -> None:
        super().__init__(message)
        self.message, self.code, self.target = message, code, target


@dataclass(frozen=True)
class ResourceSpec:
    path: str
    fields: frozenset[str]
    default_fields: tuple[str, ...]
    keys: Callable[[Cluster], Sequence[Key]]
    render: Callable[[Cluster, Key], Record | None]
    revision: Callable[[Cluster, Key], int]
    key_from_path: Callable[[Cluster, list[str]], Key]


def _links(href: str) -> dict[str, Any]:
    return {"self": {"href": href}}


def _with_prefixes(leaves: Sequence[str]) -> frozenset[str]:
    """Every dotted leaf plus each of its parents, so `fields=connections.interface` works."""
    out: set[str] = set()
    for leaf in leaves:
        parts = leaf.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return frozenset(out)


def _node_uuid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_DNS, name))


def svm_ref(svm: Svm) -> Record:
    return {"uuid": svm.uuid, "name": svm.name, "_links": _links(f"{SVMS}/{svm.uuid}")}


def _node_ref(name: str) -> Record:
    node_uuid = _node_uuid(name)
    return {"uuid": node_uuid, "name": name, "_links": _links(f"/api/cluster/nodes/{node_uuid}")}


# ---- sessions --------------------------------------------------------------------------


def _initiator(host: Host | None, name: str) -> Record:
    out: Record = {"name": name}
    if host is not None:
        # Both shapes of "no alias" reach clients: Windows hosts send null, others omit it.
        if host.alias is not None or host.os_type in ("windows", "hyper_v"):
            out["alias"] = host.alias
        if host.comment is not None:
            out["comment"] = host.comment
    return out


def _connection(cluster: Cluster, conn: Any) -> Record:
    lif: Interface = cluster.interfaces[conn.interface_uuid]
    return {
        "cid": conn.cid,
        "authentication_type": conn.authentication_type,
        "initiator_address": {"address": conn.initiator_address, "port": conn.initiator_port},
        "interface": {
            "uuid": lif.uuid,
            "name": lif.name,
            "ip": {"address": lif.address, "port": 3260},
            "_links": _links(f"{INTERFACES}/{lif.uuid}"),
        },
    }


def session_href(key: SessionKey) -> str:
    return f"{SESSIONS}/{key.svm_uuid}/{key.tpgroup}/{key.tsih}"


def render_session(cluster: Cluster, session: Session) -> Record:
    key = session.key
    igroups = cluster.igroups_of(session.initiator, key.svm_uuid)
    return {
        "svm": svm_ref(cluster.svms[key.svm_uuid]),
        "target_portal_group": key.tpgroup,
        "target_portal_group_tag": session.tpgroup_tag,
        "tsih": key.tsih,
        "isid": session.isid,
        "initiator": _initiator(cluster.hosts.get(session.initiator), session.initiator),
        "igroups": [
            {"uuid": g.uuid, "name": g.name, "_links": _links(f"{IGROUPS}/{g.uuid}")}
            for g in igroups
        ],
        "connections": [_connection(cluster, c) for c in session.connections],
        "_links": _links(session_href(key)),
    }


# A plain tuple finds a SessionKey entry (same hash, equal), so keys are not rebuilt here.
def _session_or_none(cluster: Cluster, key: Key) -> Record | None:
    session = cluster.sessions.get(key)  # type: ignore[call-overload]
    return None if session is None else render_session(cluster, session)


def _session_revision(cluster: Cluster, key: Key) -> int:
    session = cluster.sessions.get(key)  # type: ignore[call-overload]
    return -1 if session is None else session.revision


def _session_key_from_path(cluster: Cluster, parts: list[str]) -> Key:
    if len(parts) != 3:
        raise LookupFailed("entry doesn't exist", "4", "tsih")
    svm_uuid, tpgroup, tsih = parts
    if svm_uuid not in cluster.svms:
        raise LookupFailed(f'SVM "{svm_uuid}" does not exist.', "2621462", "svm.uuid")
    if not tsih.isdigit():
        raise LookupFailed(f'Invalid value "{tsih}" for field "tsih".', "2", "tsih")
    return SessionKey(svm_uuid, tpgroup, int(tsih))


SESSION_SPEC = ResourceSpec(
    path=SESSIONS,
    fields=_with_prefixes(
        [
            "svm.uuid",
            "svm.name",
            "target_portal_group",
            "target_portal_group_tag",
            "tsih",
            "isid",
            "initiator.name",
            "initiator.alias",
            "initiator.comment",
            "igroups.uuid",
            "igroups.name",
            "connections.cid",
            "connections.authentication_type",
            "connections.initiator_address.address",
            "connections.initiator_address.port",
            "connections.interface.uuid",
            "connections.interface.name",
            "connections.interface.ip.address",
            "connections.interface.ip.port",
        ]
    ),
    default_fields=("svm.uuid", "svm.name", "target_portal_group", "tsih"),
    keys=lambda cluster: cluster.session_keys,
    render=_session_or_none,
    revision=_session_revision,
    key_from_path=_session_key_from_path,
)


# ---- inventory: igroups, interfaces, SVMs, iSCSI services -------------------------------


def render_igroup(cluster: Cluster, igroup: Igroup) -> Record:
    return {
        "uuid": igroup.uuid,
        "name": igroup.name,
        "svm": svm_ref(cluster.svms[igroup.svm_uuid]),
        "os_type": igroup.os_type,
        "protocol": "iscsi",
        "initiators": [
            {"name": name, "_links": _links(f"{IGROUPS}/{igroup.uuid}/initiators/{name}")}
            for name in igroup.initiators
        ],
        "_links": _links(f"{IGROUPS}/{igroup.uuid}"),
    }


def render_interface(cluster: Cluster, lif: Interface) -> Record:
    return {
        "uuid": lif.uuid,
        "name": lif.name,
        "svm": svm_ref(cluster.svms[lif.svm_uuid]),
        "ip": {
            "address": lif.address,
            "family": lif.family,
            "netmask": "24" if lif.family == "ipv4" else "64",
        },
        "location": {
            "home_node": _node_ref(lif.home_node),
            "node": _node_ref(lif.node),
            "is_home": lif.home_node == lif.node,
        },
        "state": lif.state,
        "enabled": True,
        "scope": "svm",
        "services": ["data_core", "data_iscsi"],
        "_links": _links(f"{INTERFACES}/{lif.uuid}"),
    }


def render_svm(svm: Svm) -> Record:
    return {
        "uuid": svm.uuid,
        "name": svm.name,
        "state": svm.state,
        "subtype": "default",
        "_links": _links(f"{SVMS}/{svm.uuid}"),
    }


def render_iscsi_service(svm: Svm) -> Record:
    return {
        "svm": svm_ref(svm),
        "enabled": True,
        "target": {"name": svm.target_name, "alias": svm.name},
        "_links": _links(f"{ISCSI_SERVICES}/{svm.uuid}"),
    }


def render_cluster(cluster: Cluster) -> Record:
    return {
        "name": cluster.name,
        "uuid": cluster.uuid,
        "version": {"full": cluster.version, "generation": 9, "major": 14, "minor": 1},
        "_links": _links(CLUSTER),
    }


def _uuid_key_from_path(cluster: Cluster, parts: list[str]) -> Key:
    if len(parts) != 1:
        raise LookupFailed("entry doesn't exist", "4", "uuid")
    return (parts[0],)


def _inventory_spec(
    path: str,
    leaves: Sequence[str],
    default_fields: tuple[str, ...],
    objects: Callable[[Cluster], dict[str, Any]],
    render: Callable[[Cluster, Any], Record],
) -> ResourceSpec:
    """A collection keyed by one uuid whose records change with `inventory_revision`."""

    def render_key(cluster: Cluster, key: Key) -> Record | None:
        obj = objects(cluster).get(key[0])
        return None if obj is None else render(cluster, obj)

    return ResourceSpec(
        path=path,
        fields=_with_prefixes(leaves),
        default_fields=default_fields,
        keys=lambda cluster: [(k,) for k in sorted(objects(cluster))],
        render=render_key,
        revision=lambda cluster, key: cluster.inventory_revision,
        key_from_path=_uuid_key_from_path,
    )


IGROUP_SPEC = _inventory_spec(
    IGROUPS,
    ["uuid", "name", "svm.uuid", "svm.name", "os_type", "protocol", "initiators.name"],
    ("uuid", "name"),
    lambda c: c.igroups,
    render_igroup,
)
INTERFACE_SPEC = _inventory_spec(
    INTERFACES,
    [
        "uuid",
        "name",
        "svm.uuid",
        "svm.name",
        "ip.address",
        "ip.family",
        "ip.netmask",
        "location.home_node.uuid",
        "location.home_node.name",
        "location.node.uuid",
        "location.node.name",
        "location.is_home",
        "state",
        "enabled",
        "scope",
        "services",
    ],
    ("uuid", "name"),
    lambda c: c.interfaces,
    render_interface,
)
SVM_SPEC = _inventory_spec(
    SVMS,
    ["uuid", "name", "state", "subtype"],
    ("uuid", "name"),
    lambda c: c.svms,
    lambda c, svm: render_svm(svm),
)
ISCSI_SERVICE_SPEC = _inventory_spec(
    ISCSI_SERVICES,
    ["svm.uuid", "svm.name", "enabled", "target.name", "target.alias"],
    ("svm.uuid", "svm.name"),
    lambda c: c.svms,
    lambda c, svm: render_iscsi_service(svm),
)
CLUSTER_FIELDS = _with_prefixes(
    ["name", "uuid", "version.full", "version.generation", "version.major", "version.minor"]
)

COLLECTIONS: tuple[ResourceSpec, ...] = (
    SESSION_SPEC,
    IGROUP_SPEC,
    INTERFACE_SPEC,
    SVM_SPEC,
    ISCSI_SERVICE_SPEC,
)
