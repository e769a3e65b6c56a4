"""Socket owners bpf mode saw in process context (the task in connect() or listen()),
waiting for their socket's first record.

Events come from every namespace, watched or not, a few at every ring buffer read; a
record asks only when its socket is not in the join's cache yet. So adding must be
cheap and bounded, and a lookup must not sort everything: a big sorted part and a small
unsorted one (recent reads), merged into the big one at SMALL_MAX entries. Entries live `ttl` seconds (an open's record comes
within its lookup, or the first refresh after its namespace is found), at most `limit`.
"""
from __future__ import annotations

import numpy as np

COMM = np.dtype("S16")
# the small part is sorted again at every lookup after an add (a lookup per bpf step):
# kept small, merged at this size (a merge copies the big part once)
SMALL_MAX = 1024
_FIELDS = (("keys", np.uint64), ("pids", np.uint32), ("comms", COMM), ("at", np.float64))


def _empty() -> dict[str, np.ndarray]:
    return {f: np.empty(0, dt) for f, dt in _FIELDS}


class OwnerEvents:
    def __init__(self, ttl: float = 5.0, limit: int = 65536) -> None:
        self.ttl = ttl
        self.limit = limit
        self._big = _empty()                          # sorted by cookie
        self._small: list[dict[str, np.ndarray]] = []  # one block per add()
        self._small_n = 0
        self._small_cache: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self._big["keys"]) + self._small_n

    def add(self, cookies: np.ndarray, pids: np.ndarray, comms: np.ndarray, now: float) -> None:
        self._small.append({"keys": np.asarray(cookies, np.uint64), "pids": np.asarray(pids, np.uint32),
                            "comms": np.asarray(comms, COMM), "at": np.full(len(cookies), now)})
        self._small_n += len(cookies)
        self._small_cache = None
        if self._small_n > SMALL_MAX:
            self._merge(now)

    def _merge(self, now: float) -> None:
        """Small part into the big one; expired entries out; the newest `limit` kept."""
        parts = [self._big] + self._small
        t = {f: np.concatenate([p[f] for p in parts]) for f, _ in _FIELDS}
        keep = t["at"] >= now - self.ttl
        if keep.sum() > self.limit:   # a flood of connects: the oldest go first
            keep &= t["at"] >= np.sort(t["at"][keep])[-self.limit]
        order = np.argsort(t["keys"][keep], kind="stable")   # mostly sorted already
        self._big = {f: t[f][keep][order] for f, _ in _FIELDS}
        self._small, self._small_n, self._small_cache = [], 0, None

    def find(self, cookies: np.ndarray, now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(found mask, pids, comms) of each cookie: the latest unexpired owner seen."""
        n = len(cookies)
        found = np.zeros(n, bool)
        pids = np.zeros(n, np.uint32)
        comms = np.zeros(n, COMM)
        # the small part is newer than anything in the big one: its answers overwrite
        for part in (self._big, self._small_sorted() if self._small else None):
            if part is None or not len(part["keys"]):
                continue
            keys = part["keys"]
            pos = np.searchsorted(keys, cookies, side="right") - 1   # the last of equal keys: the latest
            ok = (pos >= 0) & (keys[np.maximum(pos, 0)] == cookies)
            ok[ok] &= part["at"][pos[ok]] >= now - self.ttl
            found |= ok
            pids[ok], comms[ok] = part["pids"][pos[ok]], part["comms"][pos[ok]]
        return found, pids, comms

    def _small_sorted(self) -> dict[str, np.ndarray]:
        """The small part as one array sorted by cookie (equal cookies in arrival order);
        kept until the next add()."""
        if self._small_cache is None:
            t = {f: np.concatenate([b[f] for b in self._small]) for f, _ in _FIELDS}
            order = np.argsort(t["keys"], kind="stable")
            self._small_cache = {f: t[f][order] for f, _ in _FIELDS}
        return self._small_cache
