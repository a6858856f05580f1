"""The clusters' memories under one budget, so that the daemon's memory has a ceiling.

A cluster's `ClusterMemory` (the digests of its open sessions' records, with their ids)
makes its next poll cheap: 8 ms instead of 41 ms of CPU for 500 sessions at 1% churn,
measured. It costs about 130 bytes per open session: a fleet of ten million sessions
would hold 1.2 GiB. With a budget, memory stops growing with the fleet at the budget; the
clusters beyond it poll as `collect --once` does, parsing everything and reading their
state back from the database, and cost CPU instead.

Admission, not eviction: polls visit the clusters in a cycle, and a least-recently-used
cache smaller than the cycle would evict each cluster just before its next poll and
remember nothing useful. Here a cluster keeps its memory while it fits; one that does not
fit goes without until room is freed (a cluster shrinks or is removed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from collector.db.memory import ClusterMemory


class FleetMemory:
    def __init__(self, budget: int) -> None:
        self.budget = budget  # open sessions, over all clusters
        self._memories: dict[str, ClusterMemory] = {}
        self._sizes: dict[str, int] = {}
        self._declined: dict[str, int] = {}  # clusters that did not fit, by their size then

    @property
    def remembered(self) -> int:
        """Open sessions held in memory now, over all clusters."""
        return sum(self._sizes.values())

    @property
    def clusters(self) -> int:
        """Clusters that have a memory now."""
        return len(self._memories)

    @contextmanager
    def borrowed(self, cluster: str) -> Iterator[ClusterMemory | None]:
        """The memory for one poll of the cluster (None: poll without), settled after it."""
        memory = self.lend(cluster)
        try:
            yield memory
        finally:
            self.settle(cluster)

    def lend(self, cluster: str) -> ClusterMemory | None:
        """The memory to poll this cluster with, or None when it would not fit.

        A cluster not yet remembered gets an empty memory if the budget has room for it
        (for its size when it last did not fit; any room at all if it never tried). Its
        size is known only after the poll, when `settle` keeps or drops it.
        """
        memory = self._memories.get(cluster)
        if memory is not None:
            return memory
        remembered = self.remembered
        if remembered >= self.budget or remembered + self._declined.get(cluster, 0) > self.budget:
            return None
        memory = self._memories[cluster] = ClusterMemory()
        self._sizes[cluster] = 0
        return memory

    def settle(self, cluster: str) -> None:
        """After a poll: keep the cluster's memory if it fits the budget, else drop it."""
        memory = self._memories.get(cluster)
        if memory is None:
            return
        size = memory.sessions
        others = self.remembered - self._sizes[cluster]
        if others + size > self.budget:
            del self._memories[cluster], self._sizes[cluster]
            self._declined[cluster] = size
        else:
            self._sizes[cluster] = size
            self._declined.pop(cluster, None)

    def keep_only(self, clusters: set[str]) -> None:
        """Forget the clusters no longer configured."""
        for name in [n for n in self._memories if n not in clusters]:
            del self._memories[name], self._sizes[name]
        self._declined = {n: size for n, size in self._declined.items() if n in clusters}

