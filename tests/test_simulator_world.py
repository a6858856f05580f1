"""The simulated SAN: deterministic generation, churn in simulated time, direct scripting."""

from __future__ import annotations

from collector.simulator import SessionKey, World, render_session


def _snapshot(world: World) -> list[tuple[SessionKey, str, str]]:
    return [
        (key, s.isid, s.initiator)
        for cluster in world.clusters
        for key, s in sorted(cluster.sessions.items())
    ]


def test_same_seed_gives_the_same_world_and_another_seed_does_not() -> None:
    a = World.generate(clusters=2, sessions=200, seed=3)
    b = World.generate(clusters=2, sessions=200, seed=3)
    c = World.generate(clusters=2, sessions=200, seed=4)
    assert _snapshot(a) == _snapshot(b)
    assert [cl.uuid for cl in a.clusters] == [cl.uuid for cl in b.clusters]
    assert _snapshot(a) != _snapshot(c)


def test_generated_world_has_exactly_the_requested_sessions_per_cluster() -> None:
    world = World.generate(clusters=3, sessions=257, seed=1)
    assert [len(c.sessions) for c in world.clusters] == [257, 257, 257]
    assert len({c.uuid for c in world.clusters}) == 3
    assert len({c.name for c in world.clusters}) == 3


def test_generated_world_has_the_variety_a_real_san_shows() -> None:
    cluster = World.generate(sessions=2000, seed=9).clusters[0]
    sessions = list(cluster.sessions.values())
    paths_per_host: dict[str, set[str]] = {}
    for s in sessions:
        paths_per_host.setdefault(s.initiator, set()).add(s.key.tpgroup)
    auth = {c.authentication_type for s in sessions for c in s.connections}
    addresses = [c.initiator_address for s in sessions for c in s.connections]
    aliases = {h.alias for h in cluster.hosts.values()}
    assert max(len(p) for p in paths_per_host.values()) >= 2  # multipath
    assert any(len(s.connections) > 1 for s in sessions)  # MC/S
    assert auth == {"chap", "none"}
    assert any(":" in a for a in addresses) and any("." in a for a in addresses)
    assert None in aliases and any(a and not a.isascii() for a in aliases)
    assert any(not cluster.igroups_of(s.initiator, s.key.svm_uuid) for s in sessions)
    assert any(len(cluster.igroups_of(s.initiator, s.key.svm_uuid)) >= 1 for s in sessions)


def test_advance_applies_churn_at_the_configured_rate_without_sleeping() -> None:
    world = World.generate(sessions=300, seed=2, churn_per_minute=30)
    before = set(world.clusters[0].session_keys)
    for _ in range(4):
        world.advance(15)  # fractions carry over: 4 x 15 s = one minute = 30 churn steps
    after = set(world.clusters[0].session_keys)
    assert world.now == 60
    assert len(after) == 300  # a logout for every login
    assert 0 < len(before - after) <= 30


def test_churn_is_deterministic() -> None:
    a = World.generate(sessions=100, seed=8, churn_per_minute=120)
    b = World.generate(sessions=100, seed=8, churn_per_minute=120)
    a.advance(90)
    b.advance(30)
    b.advance(60)
    assert _snapshot(a) == _snapshot(b)


def test_tsih_is_reused_by_a_new_session_after_logout() -> None:
    cluster = World.generate(sessions=10, seed=1).clusters[0]
    old = cluster.login("iqn.1994-05.com.redhat:first", isid="40:00:00:00:00:01")
    cluster.logout(old.key)
    new = cluster.login("iqn.1994-05.com.redhat:second", interface=old.key.tpgroup)
    assert new.key == old.key
    assert (new.initiator, new.isid) != (old.initiator, old.isid)
    assert new.revision != old.revision


def test_scripted_changes_show_in_the_rendered_record() -> None:
    cluster = World.generate(sessions=20, seed=1).clusters[0]
    session = cluster.login("iqn.1994-05.com.redhat:scripted", connections=2)
    key = session.key
    igroup = next(g for g in cluster.igroups.values() if g.svm_uuid == key.svm_uuid)
    cluster.set_alias("iqn.1994-05.com.redhat:scripted", "Ünïcode")
    cluster.add_igroup_member(igroup.name, "iqn.1994-05.com.redhat:scripted")
    cluster.update_connection(key, 1, address="fd00::99", port=50000)
    cluster.add_connection(key)
    cluster.remove_connection(key, 0)
    record = render_session(cluster, session)
    assert [g["name"] for g in record["igroups"]] == [igroup.name]
    assert record["initiator"]["alias"] == "Ünïcode"
    assert [c["cid"] for c in record["connections"]] == [1, 2]
    assert record["connections"][0]["initiator_address"] == {"address": "fd00::99", "port": 50000}
