"""The fleet's memory budget: a cluster keeps its memory while it fits, and the clusters
that do not fit poll without one, every cycle, instead of evicting each other."""

from __future__ import annotations

from collector.db.memory import ClusterMemory
from collector.fleet_memory import FleetMemory


def remembered_poll(fleet: FleetMemory, cluster: str, sessions: int) -> ClusterMemory | None:
    """What a poll does with the fleet's memory: borrow, fill with its walk, settle."""
    with fleet.borrowed(cluster) as memory:
        if memory is not None:
            memory.records = {n.to_bytes(16, "big"): n << 16 | 2 for n in range(sessions)}
    return memory


def test_a_cluster_that_fits_keeps_its_memory_between_polls() -> None:
    fleet = FleetMemory(budget=1000)
    first = remembered_poll(fleet, "a", 600)
    assert first is not None and fleet.lend("a") is first
    assert fleet.remembered == 600


def test_a_cluster_that_does_not_fit_polls_without_memory() -> None:
    fleet = FleetMemory(budget=1000)
    remembered_poll(fleet, "a", 600)
    remembered_poll(fleet, "b", 600)  # lent an empty memory, dropped once its size is known

    assert fleet.remembered == 600 and fleet.clusters == 1
    assert fleet.lend("b") is None  # the budget is spent: no memory to fill


def test_clusters_polled_in_a_cycle_do_not_evict_each_other() -> None:
    # a least-recently-used cache of 1,000 would drop every cluster before its next poll
    fleet = FleetMemory(budget=1000)
    kept = {name: remembered_poll(fleet, name, 400) for name in "abc"}
    for _ in range(5):
        for name in "abc":
            remembered_poll(fleet, name, 400)
    assert fleet.lend("a") is kept["a"] and fleet.lend("b") is kept["b"]
    assert fleet.lend("c") is None
    assert fleet.remembered == 800


def test_room_freed_by_a_removed_cluster_admits_another() -> None:
    fleet = FleetMemory(budget=1000)
    remembered_poll(fleet, "a", 600)
    remembered_poll(fleet, "b", 600)
    fleet.keep_only({"b"})
    assert remembered_poll(fleet, "b", 600) is not None
    assert fleet.remembered == 600 and fleet.lend("b") is not None


def test_a_small_cluster_still_fits_beside_one_that_did_not() -> None:
    fleet = FleetMemory(budget=1000)
    remembered_poll(fleet, "a", 600)
    remembered_poll(fleet, "big", 600)
    assert remembered_poll(fleet, "small", 300) is not None
    assert fleet.remembered == 900


def test_a_cluster_that_grows_past_the_budget_loses_its_memory() -> None:
    fleet = FleetMemory(budget=1000)
    remembered_poll(fleet, "a", 600)
    remembered_poll(fleet, "a", 1200)
    assert fleet.remembered == 0 and fleet.clusters == 0


def test_a_budget_of_zero_remembers_nothing() -> None:
    fleet = FleetMemory(budget=0)
    assert remembered_poll(fleet, "a", 10) is None
    assert fleet.remembered == 0


def test_a_memory_counts_its_open_sessions() -> None:
    memory = ClusterMemory(records={b"1" * 16: 1 << 16 | 2, b"2" * 16: 2 << 16 | 1})
    assert memory.sessions == 2
    assert ClusterMemory().sessions == 0
