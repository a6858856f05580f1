"""The simulated SAN: clusters, SVMs, LIFs, igroups, hosts and their iSCSI sessions.

Pure and deterministic: everything random comes from a `random.Random` seeded from the
world's seed, and time only moves when `World.advance` is called. Nothing here knows
about HTTP or JSON; `records.py` turns this state into ONTAP records.

Every mutation stamps the affected sessions with a fresh `revision` from a per-cluster
counter. The app caches rendered records by revision, so a TSIH reused by a new session
(same key, new revision) can never be served from the old session's cache entry.
"""

from __future__ import annotations

import bisect
import random
import uuid
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

ISCSI_PORT = 3260
OS_TYPES = ("linux", "windows", "vmware", "aix", "solaris", "hyper_v")
# Aliases exercise what a collector must store faithfully: non-ASCII text and none at all.
ALIASES = (
    "db-primary",
    "Zürich-Datenbank-1",
    "serveur-éléphant",
    "データベース-01",
    "ΑΘΗΝΑ-backup",
    "exchange mailbox 3",
    "ферма-узел-7",
)
IQN_PREFIXES = {
    "linux": "iqn.1994-05.com.redhat",
    "windows": "iqn.1991-05.com.microsoft",
    "vmware": "iqn.1998-01.com.vmware",
    "aix": "iqn.1992-08.com.ibm",
    "solaris": "iqn.1986-03.com.sun",
    "hyper_v": "iqn.1991-05.com.microsoft",
}
MAX_TSIH = 0xFFFF


class SessionKey(NamedTuple):
    """ONTAP's path key for a session: `{svm.uuid}/{tpgroup}/{tsih}`. Sorts as ONTAP orders."""

    svm_uuid: str
    tpgroup: str
    tsih: int


@dataclass(slots=True)
class Svm:
    uuid: str
    name: str
    target_name: str
    state: str = "running"


@dataclass(slots=True)
class Interface:
    """An iSCSI LIF. ONTAP makes each LIF its own target portal group, named after it."""

    uuid: str
    name: str
    svm_uuid: str
    address: str
    family: str
    tpgroup_tag: int
    home_node: str
    node: str
    state: str = "up"


@dataclass(slots=True)
class Igroup:
    uuid: str
    name: str
    svm_uuid: str
    os_type: str
    initiators: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Host:
    """An initiator: one IQN, the SVM it uses and the address it logs in from."""

    name: str
    svm_uuid: str
    os_type: str
    family: str
    address: str
    alias: str | None
    comment: str | None = None
    chap: bool = False


@dataclass(slots=True)
class Connection:
    cid: int
    authentication_type: str
    initiator_address: str
    initiator_port: int
    interface_uuid: str


@dataclass(slots=True)
class Session:
    key: SessionKey
    tpgroup_tag: int
    isid: str
    initiator: str
    connections: list[Connection]
    logged_in_at: float
    revision: int = 0


@dataclass
class Cluster:
    """One ONTAP cluster and everything logged in to it."""

    index: int
    name: str
    uuid: str
    version: str
    rng: random.Random
    svms: dict[str, Svm] = field(default_factory=dict)
    interfaces: dict[str, Interface] = field(default_factory=dict)
    igroups: dict[str, Igroup] = field(default_factory=dict)
    hosts: dict[str, Host] = field(default_factory=dict)
    sessions: dict[SessionKey, Session] = field(default_factory=dict)
    now: float = 0.0
    # Bumped on any change to SVMs, LIFs or igroups: their records are cached by it.
    inventory_revision: int = 0
    _revision_counter: int = 0
    _sorted_keys: list[SessionKey] = field(default_factory=list)
    _sessions_by_initiator: dict[str, set[SessionKey]] = field(default_factory=dict)
    _free_tsihs: dict[tuple[str, str], deque[int]] = field(default_factory=dict)
    _next_tsih: dict[tuple[str, str], int] = field(default_factory=dict)
    _next_port: int = 49152
    _host_list: list[str] = field(default_factory=list)
    _igroups_by_initiator: dict[str, set[str]] = field(default_factory=dict)

    # ---- reading -------------------------------------------------------------------

    @property
    def session_keys(self) -> list[SessionKey]:
        """All session keys in ONTAP's order (svm.uuid, tpgroup, tsih). Do not mutate."""
        return self._sorted_keys

    def svm(self, name_or_uuid: str) -> Svm:
        if name_or_uuid in self.svms:
            return self.svms[name_or_uuid]
        for svm in self.svms.values():
            if svm.name == name_or_uuid:
                return svm
        raise KeyError(f"no SVM {name_or_uuid!r} on {self.name}")

    def interface(self, name_or_uuid: str) -> Interface:
        if name_or_uuid in self.interfaces:
            return self.interfaces[name_or_uuid]
        for lif in self.interfaces.values():
            if lif.name == name_or_uuid:
                return lif
        raise KeyError(f"no interface {name_or_uuid!r} on {self.name}")

    def igroup(self, name_or_uuid: str) -> Igroup:
        if name_or_uuid in self.igroups:
            return self.igroups[name_or_uuid]
        for igroup in self.igroups.values():
            if igroup.name == name_or_uuid:
                return igroup
        raise KeyError(f"no igroup {name_or_uuid!r} on {self.name}")

    def igroups_of(self, initiator: str, svm_uuid: str) -> list[Igroup]:
        """The igroups of an SVM that list the initiator, by name (as a session shows them)."""
        groups = (self.igroups[u] for u in self._igroups_by_initiator.get(initiator, ()))
        return sorted((g for g in groups if g.svm_uuid == svm_uuid), key=lambda g: g.name)

    def sessions_of(self, initiator: str) -> list[Session]:
        keys = sorted(self._sessions_by_initiator.get(initiator, ()))
        return [self.sessions[k] for k in keys]

    def svm_interfaces(self, svm_uuid: str, family: str | None = None) -> list[Interface]:
        return [
            lif
            for lif in self.interfaces.values()
            if lif.svm_uuid == svm_uuid and (family is None or lif.family == family)
        ]

    # ---- scripting: what tests call to set up an exact situation ------------------

    def add_host(
        self,
        initiator: str,
        *,
        svm: str | None = None,
        alias: str | None = None,
        comment: str | None = None,
        address: str | None = None,
        os_type: str = "linux",
        chap: bool = False,
    ) -> Host:
        """Register an initiator so it can log in; its address defaults to a fresh IPv4."""
        svm_uuid = self.svm(svm).uuid if svm else next(iter(self.svms))
        n = len(self.hosts) + 1
        address = address or f"192.168.{(n // 250) % 256}.{n % 250 + 1}"
        family = "ipv6" if ":" in address else "ipv4"
        host = Host(initiator, svm_uuid, os_type, family, address, alias, comment, chap)
        self.hosts[initiator] = host
        self._host_list.append(initiator)
        return host

    def login(
        self,
        initiator: str,
        *,
        svm: str | None = None,
        interface: str | None = None,
        isid: str | None = None,
        tsih: int | None = None,
        connections: int = 1,
        authentication_type: str | None = None,
        address: str | None = None,
    ) -> Session:
        """Log an initiator in through one LIF; unknown initiators are registered first.

        Without `interface` the host's SVM's first LIF of its address family is used;
        without `tsih` the target assigns one, reusing freed values first (as ONTAP may).
        """
        host = self.hosts.get(initiator) or self.add_host(initiator, svm=svm, address=address)
        svm_uuid = self.svm(svm).uuid if svm else host.svm_uuid
        lif = (
            self.interface(interface)
            if interface
            else self.svm_interfaces(svm_uuid, host.family)[0]
        )
        key = SessionKey(svm_uuid, lif.name, tsih if tsih is not None else self._take_tsih(lif))
        if key in self.sessions:
            raise ValueError(f"session {key} already exists")
        auth = authentication_type or ("chap" if host.chap else "none")
        conns = [
            Connection(cid, auth, address or host.address, self._take_port(), lif.uuid)
            for cid in range(connections)
        ]
        session = Session(
            key, lif.tpgroup_tag, isid or self._random_isid(), initiator, conns, self.now
        )
        self._insert(session)
        return session

    def logout(self, key: SessionKey) -> Session:
        """End a session; its TSIH becomes free for the next login on that portal group."""
        session = self.sessions.pop(key)
        del self._sorted_keys[bisect.bisect_left(self._sorted_keys, key)]
        self._sessions_by_initiator[session.initiator].discard(key)
        self._free_tsihs.setdefault((key.svm_uuid, key.tpgroup), deque()).append(key.tsih)
        return session

    def add_connection(
        self, key: SessionKey, *, address: str | None = None, authentication_type: str | None = None
    ) -> Connection:
        """Add an MC/S connection to a session (same portal group, a new source port)."""
        session = self.sessions[key]
        first = session.connections[0]
        cid = max((c.cid for c in session.connections), default=-1) + 1
        conn = Connection(
            cid,
            authentication_type or first.authentication_type,
            address or first.initiator_address,
            self._take_port(),
            first.interface_uuid,
        )
        session.connections.append(conn)
        self._touch(session)
        return conn

    def remove_connection(self, key: SessionKey, cid: int) -> None:
        session = self.sessions[key]
        session.connections = [c for c in session.connections if c.cid != cid]
        self._touch(session)

    def update_connection(
        self,
        key: SessionKey,
        cid: int,
        *,
        authentication_type: str | None = None,
        address: str | None = None,
        port: int | None = None,
    ) -> Connection:
        session = self.sessions[key]
        conn = next(c for c in session.connections if c.cid == cid)
        if authentication_type is not None:
            conn.authentication_type = authentication_type
        if address is not None:
            conn.initiator_address = address
        if port is not None:
            conn.initiator_port = port
        self._touch(session)
        return conn

    def set_alias(self, initiator: str, alias: str | None) -> None:
        """Change (or clear, with None) an initiator's alias on all its sessions."""
        self.hosts[initiator].alias = alias
        self._touch_initiator(initiator)

    def add_igroup_member(self, igroup: str, initiator: str) -> None:
        group = self.igroup(igroup)
        if initiator not in group.initiators:
            group.initiators.append(initiator)
        self._igroups_by_initiator.setdefault(initiator, set()).add(group.uuid)
        self._igroup_changed(initiator)

    def remove_igroup_member(self, igroup: str, initiator: str) -> None:
        group = self.igroup(igroup)
        if initiator in group.initiators:
            group.initiators.remove(initiator)
        self._igroups_by_initiator.get(initiator, set()).discard(group.uuid)
        self._igroup_changed(initiator)

    # ---- churn ---------------------------------------------------------------------

    def churn_once(self) -> None:
        """One churn step: a logout, a login, and now and then an igroup or alias change."""
        if self._sorted_keys:
            self.logout(self._sorted_keys[self.rng.randrange(len(self._sorted_keys))])
        if self._host_list:
            host = self.hosts[self._host_list[self.rng.randrange(len(self._host_list))]]
            lifs = self.svm_interfaces(host.svm_uuid, host.family)
            if lifs:
                lif = lifs[self.rng.randrange(len(lifs))]
                self.login(host.name, interface=lif.uuid, connections=self._connection_count())
        roll = self.rng.random()
        if roll < 0.05:
            self._churn_igroup()
        elif roll < 0.07:
            self._churn_alias()

    def _churn_igroup(self) -> None:
        if not self.igroups or not self._host_list:
            return
        group = self.igroups[self.rng.choice(sorted(self.igroups))]
        candidates = [n for n in self._host_list[-64:] if self.hosts[n].svm_uuid == group.svm_uuid]
        if group.initiators and (not candidates or self.rng.random() < 0.5):
            self.remove_igroup_member(group.uuid, self.rng.choice(group.initiators))
        elif candidates:
            self.add_igroup_member(group.uuid, self.rng.choice(candidates))

    def _churn_alias(self) -> None:
        if self._host_list:
            name = self._host_list[self.rng.randrange(len(self._host_list))]
            self.set_alias(name, self.rng.choice((*ALIASES, None)))

    # ---- internals -----------------------------------------------------------------

    def _insert(self, session: Session) -> None:
        self.sessions[session.key] = session
        bisect.insort(self._sorted_keys, session.key)
        self._sessions_by_initiator.setdefault(session.initiator, set()).add(session.key)
        self._touch(session)

    def _touch(self, session: Session) -> None:
        self._revision_counter += 1
        session.revision = self._revision_counter

    def _touch_initiator(self, initiator: str) -> None:
        for key in self._sessions_by_initiator.get(initiator, ()):
            self._touch(self.sessions[key])

    def _igroup_changed(self, initiator: str) -> None:
        self.inventory_revision += 1
        self._touch_initiator(initiator)

    def _take_tsih(self, lif: Interface) -> int:
        pool = (lif.svm_uuid, lif.name)
        free = self._free_tsihs.get(pool)
        while free:
            tsih = free.popleft()
            if SessionKey(lif.svm_uuid, lif.name, tsih) not in self.sessions:
                return tsih
        tsih = self._next_tsih.get(pool, 1)
        if tsih > MAX_TSIH:
            raise RuntimeError(f"portal group {lif.name} has no free TSIH")
        self._next_tsih[pool] = tsih + 1
        return tsih

    def _take_port(self) -> int:
        port = self._next_port
        self._next_port = 49152 + (self._next_port - 49152 + 1) % 16384
        return port

    def _random_isid(self) -> str:
        # Type-qualifier 0x40 (random) in the first byte, as Linux open-iscsi and Windows use.
        tail = self.rng.getrandbits(40).to_bytes(5, "big")
        return ":".join(f"{b:02x}" for b in (0x40, *tail))

    def _connection_count(self) -> int:
        # One in ten sessions is MC/S with two connections.
        return 2 if self.rng.random() < 0.1 else 1


@dataclass
class World:
    """Every simulated cluster, sharing one simulated clock."""

    clusters: list[Cluster]
    seed: int
    churn_per_minute: float = 0.0
    now: float = 0.0
    _churn_due: list[float] = field(default_factory=list)

    @classmethod
    def generate(
        cls,
        clusters: int = 1,
        sessions: int = 100,
        seed: int = 0,
        churn_per_minute: float = 0.0,
    ) -> World:
        """A deterministic world: the same arguments give the same clusters and sessions."""
        built = [_generate_cluster(i, sessions, seed) for i in range(clusters)]
        return cls(built, seed, churn_per_minute, 0.0, [0.0] * clusters)

    def advance(self, seconds: float) -> None:
        """Move simulated time forward, applying `churn_per_minute` logins and logouts per
        cluster; fractions carry over so small steps add up to the same churn."""
        if seconds < 0:
            raise ValueError("time does not go backwards")
        self.now += seconds
        for i, cluster in enumerate(self.clusters):
            cluster.now = self.now
            self._churn_due[i] += seconds * self.churn_per_minute / 60.0
            while self._churn_due[i] >= 1.0:
                self._churn_due[i] -= 1.0
                cluster.churn_once()

    def advance_to(self, now: float) -> None:
        if now > self.now:
            self.advance(now - self.now)

    def __iter__(self) -> Iterator[Cluster]:
        return iter(self.clusters)


# ---- generation ------------------------------------------------------------------------


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _generate_cluster(index: int, sessions: int, seed: int) -> Cluster:
    rng = random.Random(f"{seed}:{index}")
    name = f"sim-cluster-{index + 1:03d}"
    cluster = Cluster(index, name, _uuid(rng), "NetApp Release 9.14.1: Simulated", rng)
    nodes = (f"{name}-01", f"{name}-02")
    svm_count = min(6, 2 + sessions // 25000)
    for s in range(svm_count):
        _add_svm(cluster, s, nodes)
    _add_hosts_and_sessions(cluster, sessions)
    _add_igroups(cluster)
    return cluster


def _add_svm(cluster: Cluster, s: int, nodes: tuple[str, str]) -> None:
    rng = cluster.rng
    svm = Svm(
        _uuid(rng),
        f"svm{s + 1}",
        f"iqn.1992-08.com.netapp:sn.{rng.getrandbits(128):032x}:vs.{s + 3}",
    )
    cluster.svms[svm.uuid] = svm
    # Per SVM: two IPv4 LIFs on each node and one IPv6 LIF on each node.
    layout = [("ipv4", 0), ("ipv4", 1), ("ipv4", 0), ("ipv4", 1), ("ipv6", 0), ("ipv6", 1)]
    for j, (family, node) in enumerate(layout):
        n = s * len(layout) + j
        c = cluster.index
        address = (
            f"10.{c // 256}.{c % 256}.{11 + n}" if family == "ipv4" else f"fd20:{c:x}::{11 + n:x}"
        )
        lif = Interface(
            _uuid(rng),
            f"lif_{svm.name}_iscsi_{j + 1}",
            svm.uuid,
            address,
            family,
            1000 + n,
            nodes[node],
            nodes[node],
        )
        cluster.interfaces[lif.uuid] = lif


def _add_hosts_and_sessions(cluster: Cluster, sessions: int) -> None:
    rng = cluster.rng
    svm_uuids = list(cluster.svms)
    n = 0
    while len(cluster.sessions) < sessions:
        n += 1
        os_type = OS_TYPES[rng.randrange(len(OS_TYPES))]
        family = "ipv6" if rng.random() < 0.2 else "ipv4"
        address = (
            f"fd10:{cluster.index:x}::{n:x}"
            if family == "ipv6"
            else f"172.{16 + (n >> 16) % 16}.{(n >> 8) & 255}.{n & 255}"
        )
        host = cluster.add_host(
            f"{IQN_PREFIXES[os_type]}:host{n:06d}",
            svm=svm_uuids[rng.randrange(len(svm_uuids))],
            alias=rng.choice(ALIASES) if rng.random() < 0.6 else None,
            comment="rack B" if rng.random() < 0.05 else None,
            address=address,
            os_type=os_type,
            chap=rng.random() < 0.4,
        )
        lifs = cluster.svm_interfaces(host.svm_uuid, host.family)
        # Multipath: most hosts log in through two portal groups, a few through one or four.
        roll = rng.random()
        paths = 1 if roll < 0.2 else (4 if roll > 0.85 and len(lifs) >= 4 else 2)
        start = rng.randrange(len(lifs))
        for p in range(min(paths, sessions - len(cluster.sessions))):
            lif = lifs[(start + p) % len(lifs)]
            cluster.login(host.name, interface=lif.uuid, connections=cluster._connection_count())


def _add_igroups(cluster: Cluster) -> None:
    """Group hosts per SVM and OS type, 16 to an igroup; a few hosts stay in none."""
    rng = cluster.rng
    buckets: dict[tuple[str, str], list[str]] = {}
    for host in cluster.hosts.values():
        if rng.random() >= 0.03:
            buckets.setdefault((host.svm_uuid, host.os_type), []).append(host.name)
    for (svm_uuid, os_type), names in sorted(buckets.items()):
        svm_name = cluster.svms[svm_uuid].name
        for chunk in range(0, len(names), 16):
            group = Igroup(
                _uuid(rng),
                f"{os_type}_{svm_name}_{chunk // 16 + 1:04d}",
                svm_uuid,
                os_type,
                names[chunk : chunk + 16],
            )
            cluster.igroups[group.uuid] = group
            for name in group.initiators:
                cluster._igroups_by_initiator.setdefault(name, set()).add(group.uuid)
