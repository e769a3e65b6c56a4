"""Kernel events name namespaces by inode: which watched namespace is that, and when
to look again for one discovery does not list yet."""
from __future__ import annotations

import time

from ..netns.registry import Namespace, NamespaceTable

FORGET_AFTER = 5.0  # s an inode discovery did not list stays unresolved (events from it stay cheap)


class NamespaceResolver:
    def __init__(self, table: NamespaceTable) -> None:
        self.table = table
        self.reconcile_at: list[float] = []   # when the loop should re-discover namespaces
        self._unresolved: dict[int, float] = {}   # netns inode -> do not look again before
        self._resolving: set[int] = set()

    def namespace(self, ino: int) -> Namespace | None:
        """The watched namespace with this inode; None while it is being looked for (see
        resolving()) or if discovery does not list it (then remembered for a while)."""
        ns = self.table.by_inode(ino)
        if ns is not None or ino in self._resolving:
            return ns
        if self._unresolved.get(ino, 0.0) > time.monotonic():
            return None
        self._resolving.add(ino)
        self.reconcile_at.append(time.monotonic())
        return None

    def resolving(self, ino: int) -> bool:
        return ino in self._resolving

    def due(self, now: float) -> bool:
        """A re-discovery is due now (and is taken off the list)."""
        if self.reconcile_at and now >= min(self.reconcile_at):
            self.reconcile_at = [t for t in self.reconcile_at if t > now]
            return True
        return False

    def reconciled(self) -> None:
        """After table.reconcile(): inodes still unknown are left alone for a while."""
        now = time.monotonic()
        for ino in self._resolving:
            if self.table.by_inode(ino) is None:
                self._unresolved[ino] = now + FORGET_AFTER
        self._resolving.clear()
        if len(self._unresolved) > 10000:
            self._unresolved.clear()
