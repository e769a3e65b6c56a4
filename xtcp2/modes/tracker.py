"""What to read after which kernel events: pending opens per namespace, closes waiting
for their destroy broadcast, live sockets per namespace. No I/O here.

Everything works on numpy arrays of events (one batch per ring buffer read); Python
loops run per namespace, never per event, except for the small per-socket memory
kept for the close merge (`last_known`).
"""
from __future__ import annotations

from collections import deque

import numpy as np

from ..ebpf import tcp_events as E

_EMPTY_U64 = np.empty(0, np.uint64)
FINAL_MERGE = 4096  # cookies with a close record kept unsorted before a merge

# What a pending open keeps of its event: what a lookup needs. Opens wait for their
# coalescing window, or for their new namespace to be discovered, and a host where a
# population of 100,000 connections comes up at once queued 27 MiB of whole events.
OPEN_FIELDS = ("ktime_ns", "cookie", "netns_ino", "family", "oldstate", "newstate", "sport", "dport",
               "saddr", "daddr")
OPEN_DTYPE = np.dtype([(f, E.EVENT_DTYPE.fields[f][0]) for f in OPEN_FIELDS])


def _open_events(st: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The OPEN_FIELDS of the masked events, packed (60 bytes each instead of 232)."""
    idx = np.flatnonzero(mask)
    out = np.empty(len(idx), OPEN_DTYPE)
    for f in OPEN_FIELDS:
        out[f] = st[f][idx]
    return out


class Tracker:
    def __init__(self, window: float = 0.005, close_wait: float = 0.25, remember: float = 2.0,
                 remember_final: float = 10.0) -> None:
        self.window = window          # coalescing window for open lookups
        self.close_wait = close_wait  # how long a BPF close waits for the destroy broadcast
        self.remember = remember      # how long closing cookies are remembered (open dedupe)
        # cookie -> who produced its close record; a broadcast read late (a busy host, a
        # slow reader) must not produce a second record, so this memory is long
        self.remember_final = remember_final
        # cookies with a close record, as numpy, not a dict: a churning host closes
        # thousands of sockets a second, and a dict entry per cookie cost ~100 bytes
        # (15 MiB at 2,000 connections/s) against 16 here. Sorted and merged in blocks;
        # the newest few thousand wait unsorted in _final_new.
        self._final_keys = _EMPTY_U64
        self._final_at = np.empty(0, np.float64)
        self._final_new: list[tuple[float, np.ndarray]] = []
        self._final_new_n = 0
        self._final_sweep = 0.0
        self._opens: dict[int, list[np.ndarray]] = {}
        self._open_due: dict[int, float] = {}
        self._open_since: dict[int, float] = {}  # netns inode -> ingest time of its oldest pending open
        self._closes: deque[tuple[float, np.ndarray]] = deque()
        self._closed: deque[tuple[float, np.ndarray]] = deque()      # cookies seen closing
        self.live: dict[int, int] = {}       # netns inode -> open sockets seen (clamped at 0)
        self.netns_seen: list[int] = []      # inodes from EV_NETNS, drained by the collector
        self.last_known: dict[int, tuple[int, int]] = {}  # cookie -> (uid, inode) from an open lookup
        self.close_ktime: dict[int, int] = {}  # cookie -> ktime of its BPF close (latency of broadcast records)

    # ---- input ---------------------------------------------------------------------
    def ingest(self, ev: np.ndarray, now: float) -> None:
        if not len(ev):
            return
        kinds = ev["kind"]
        if (kinds == E.EV_NETNS).any():
            self.netns_seen.extend(int(i) for i in ev["netns_ino"][kinds == E.EV_NETNS])
        is_state = kinds == E.EV_STATE
        st = ev if is_state.all() else ev[is_state]  # nearly always all: no copy
        ns_state = st["newstate"]
        opens = _open_events(st, (ns_state == E.TCP_ESTABLISHED) | (ns_state == E.TCP_LISTEN))
        closes = st[ns_state == E.TCP_CLOSE]
        if len(opens):
            inos = opens["netns_ino"]
            for ino in np.unique(inos).tolist():
                part = opens[inos == ino]
                self._opens.setdefault(ino, []).append(part)
                self._open_since.setdefault(ino, now)
                self._open_due.setdefault(ino, now + self.window)
                self.live[ino] = self.live.get(ino, 0) + int((part["newstate"] == E.TCP_ESTABLISHED).sum())
        if len(closes):
            self._closes.append((now + self.close_wait, closes))
            cks = closes["cookie"].copy()
            self._closed.append((now, cks))
            self.close_ktime.update(zip(cks.tolist(), closes["ktime_ns"].tolist()))
            inos, counts = np.unique(closes["netns_ino"][closes["oldstate"] != E.TCP_LISTEN], return_counts=True)
            for ino, k in zip(inos.tolist(), counts.tolist()):
                self.live[ino] = max(0, self.live.get(ino, 0) - k)
        self._expire(now)

    def final_emitted(self, cookies, now: float, source: int = 1) -> None:
        """Cookies whose close record went out (source 1 = destroy broadcast, 2 = bpf)."""
        cks = np.asarray(cookies, np.uint64)
        cks = cks[cks != 0]
        if len(cks):
            self._final_new.append((now, cks))
            self._final_new_n += len(cks)
            if self._final_new_n >= FINAL_MERGE:
                self._merge_final()

    def not_final(self, cookies: np.ndarray) -> np.ndarray:
        """Mask of cookies that have no close record yet (cookie 0 = unknown: keep)."""
        cookies = np.asarray(cookies, np.uint64)
        keys = self._final_keys
        seen = np.zeros(len(cookies), bool)
        if len(keys):
            i = np.minimum(np.searchsorted(keys, cookies), len(keys) - 1)
            seen = keys[i] == cookies
        if self._final_new:
            seen |= np.isin(cookies, np.concatenate([c for _, c in self._final_new]))
        return ~seen | (cookies == 0)

    def _merge_final(self) -> None:
        new, self._final_new, self._final_new_n = self._final_new, [], 0
        if not new:
            return
        keys = np.concatenate([self._final_keys] + [c for _, c in new])
        at = np.concatenate([self._final_at] + [np.full(len(c), t) for t, c in new])
        order = np.argsort(keys, kind="stable")  # sorted runs: timsort merges them in linear time
        self._final_keys, self._final_at = keys[order], at[order]

    # ---- output --------------------------------------------------------------------
    def due_opens(self, now: float, force: bool = False) -> list[tuple[int, np.ndarray]]:
        """(netns inode, open events still worth a lookup) for namespaces whose window ended."""
        out = []
        for ino in [i for i, due in self._open_due.items() if force or due <= now]:
            del self._open_due[ino]
            evs = self._opens.pop(ino)
            ev = evs[0] if len(evs) == 1 else np.concatenate(evs)
            closed = self._closed_since(self._open_since.pop(ino, 0.0))
            if len(closed):
                # opened and closed within the window (cookie 0 = unknown: classic tracepoint)
                ev = ev[~np.isin(ev["cookie"], closed) | (ev["cookie"] == 0)]
            if len(ev):
                known = ev["cookie"] != 0
                _, first = np.unique(ev["cookie"][known], return_index=True)
                out.append((ino, np.concatenate([ev[known][np.sort(first)], ev[~known]])))
        return out

    def requeue(self, ino: int, ev: np.ndarray, due: float) -> None:
        """Put opens back (their namespace is not known yet)."""
        self._opens.setdefault(ino, []).append(ev)
        self._open_since[ino] = 0.0  # their ingest time is gone: compare with every close remembered
        self._open_due[ino] = min(self._open_due.get(ino, due), due)

    def due_closes(self, now: float, force: bool = False) -> np.ndarray:
        """BPF close events whose wait is over and that no destroy broadcast covered."""
        self._expire(now)
        ready = []
        while self._closes and (force or self._closes[0][0] <= now):
            ready.append(self._closes.popleft()[1])
        if not ready:
            return np.empty(0, E.EVENT_DTYPE)
        ev = ready[0] if len(ready) == 1 else np.concatenate(ready)
        ev = ev[self.not_final(ev["cookie"])]
        self.final_emitted(ev["cookie"], now, 2)
        return ev

    def next_deadline(self) -> float | None:
        ds = list(self._open_due.values())
        if self._closes:
            ds.append(self._closes[0][0])
        return min(ds) if ds else None

    def pending(self) -> int:
        return sum(len(a) for v in self._opens.values() for a in v) + sum(len(a) for _, a in self._closes)

    def live_namespaces(self) -> set[int]:
        return {ino for ino, k in self.live.items() if k > 0}

    def reset_live(self, counts: dict[int, int]) -> None:
        """After a resync: the dump's per-namespace socket counts are the truth."""
        self.live = {ino: k for ino, k in counts.items() if k > 0}

    # ---- internals -------------------------------------------------------------------
    def _closed_since(self, t: float) -> np.ndarray:
        """Cookies of closes ingested at or after t: a socket cannot close before its
        open was ingested, so pending opens only need the closes since the oldest of them."""
        parts = []
        for ts, cks in reversed(self._closed):
            if ts < t:
                break
            parts.append(cks)
        if not parts:
            return _EMPTY_U64
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _expire(self, now: float) -> None:
        horizon = now - self.remember
        while self._closed and self._closed[0][0] < horizon:
            ck = self.close_ktime
            for c in self._closed.popleft()[1].tolist():
                ck.pop(c, None)
        if now >= self._final_sweep:  # remembered remember_final, up to a second longer
            self._final_sweep = now + 1.0
            self._merge_final()
            keep = self._final_at >= now - self.remember_final
            if not keep.all():
                self._final_keys, self._final_at = self._final_keys[keep], self._final_at[keep]
        if len(self.last_known) > 1_000_000:  # bounded: closes that were never seen
            self.last_known.clear()
