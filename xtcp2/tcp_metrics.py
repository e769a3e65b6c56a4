"""TCP itself on /metrics: sockets by state, RTT, retransmits, bytes, opens and closes.

Modelled on node_exporter's node_tcp_connection_states, per network namespace and
container (its name, else its short id; see CONTAINER_FIELD). Fed by ONE call, `TCP.observe(columns, constants)`,
where decoded columns become records, and `TCP.poll_done(names)` at the end of every
poll. Everything is columnar: np.unique / bincount / searchsorted over a chunk's
columns, never a Python step per socket.

Semantics
- `xtcp2_tcp_sockets{netns,container,state}` and the RTT gauge histogram describe the
  last COMPLETE poll of a namespace: chunks accumulate in a pending copy that
  replaces the shown one in poll_done(), so a scrape never sees half a dump.
- Counters (retransmits, bytes sent/received) are sums of per-socket increases: each
  socket's last seen tcpi_total_retrans / tcpi_bytes_acked / tcpi_bytes_received is
  kept by socket cookie and every new record adds what grew since. A close record
  adds the socket's final increase and forgets it. Totals over live sockets would go
  DOWN when a socket closes (a false counter reset for Prometheus); increases never
  do. Sockets alive at the daemon's first complete poll are a baseline (their earlier
  history is not counted); sockets first seen later count from zero, i.e. everything
  since they opened. A socket that closes unseen by a close record loses at most its
  last interval.
- Opens and closes count records by their trigger (OPEN in bpf mode; CLOSE from bpf
  close events and the destroy groups). Poll mode without close records counts none.
- Cardinality: at most `max_groups` (netns, container) label sets (-metricsMaxNetns);
  the rest are summed under netns="other", container="", whose socket gauges change at
  complete polls only (bpf mode: resyncs). A label set whose namespace is missing from
  a complete poll is freed for others.
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping

import numpy as np

from .columns import merge_sorted
from .prom_light import (REGISTRY, Collector, CounterMetricFamily, GaugeHistogramMetricFamily,
                         GaugeMetricFamily)

# node_exporter's state names (include/net/tcp_states.h order), label value "state".
STATE_NAMES = {
    1: "established", 2: "syn_sent", 3: "syn_recv", 4: "fin_wait1", 5: "fin_wait2", 6: "time_wait",
    7: "close", 8: "close_wait", 9: "last_ack", 10: "listen", 11: "closing", 12: "new_syn_recv",
}
NSTATES = 16
OTHER = ("other", "")
# Container label: the record's container_name (from the runtime's API, -enrichContainer),
# else the short id (12 characters, as `docker ps` shows it) of its container_id
# (-resolveContainerId); empty for host sockets. Both come from the identity joins.
CONTAINER_FIELD = "container_name"
CONTAINER_ID_FIELD = "container_id"
SHORT_ID = 12
TRIGGER_POLL, TRIGGER_OPEN, TRIGGER_CLOSE, TRIGGER_REFRESH, TRIGGER_RESYNC = 0, 1, 2, 3, 4
# seconds; tcpi_rtt is in microseconds
RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_RTT_BOUNDS_US = np.array([b * 1e6 for b in RTT_BUCKETS])
NB = len(RTT_BUCKETS) + 1  # + the +Inf bucket
# counter columns: (name, help, record field that grows)
COUNTERS = (
    ("xtcp2_tcp_retransmits", "Segments retransmitted (increase of tcpi_total_retrans)", "tcp_info_total_retrans"),
    ("xtcp2_tcp_sent_bytes", "Bytes sent and acknowledged (increase of tcpi_bytes_acked)", "tcp_info_bytes_acked"),
    ("xtcp2_tcp_received_bytes", "Bytes received (increase of tcpi_bytes_received)", "tcp_info_bytes_received"),
)
NC = len(COUNTERS)
# complete polls an unseen socket is remembered for (a namespace whose dump failed once
# must not have all its sockets counted again from zero)
KEEP_UNSEEN_POLLS = 3


def _rows(cols) -> int:
    n = getattr(cols, "n", None)
    if n is None:
        n = cols.get("_n")
    if n is None:
        n = len(cols["inet_diag_msg_state"])
    return int(n)


def _ints(cols, consts: Mapping, name: str, n: int) -> np.ndarray | int | None:
    """A numeric field as a column, or a scalar when it is a batch constant."""
    col = cols.get(name)
    if col is not None:
        return np.asarray(col)
    v = consts.get(name)
    return None if v is None else int(v)


def _strings(cols, consts: Mapping, name: str, n: int) -> tuple[list[str], np.ndarray | None]:
    """Distinct values of a string field and each row's index into them (None: all index 0)."""
    col = cols.get(name)
    if col is None:
        v = consts.get(name, "")
        return [v.decode() if isinstance(v, bytes) else str(v or "")], None
    data = np.ascontiguousarray(col.data)
    # one row = one fixed-width byte string; length is part of the key (trailing NULs)
    keyed = np.concatenate([data, np.asarray(col.lengths, np.uint16).view(np.uint8).reshape(n, 2)], axis=1)
    rows = keyed.view(np.dtype((np.void, keyed.shape[1]))).ravel()
    uniq, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    return [col.value(int(i)).decode(errors="replace") for i in first], inverse.ravel()


def _container_labels(cols, consts: Mapping, n: int) -> tuple[list[str], np.ndarray | None]:
    """The container label of each row, as _strings(): its name, else its short id."""
    names, ni = _strings(cols, consts, CONTAINER_FIELD, n)
    if "" not in names or (cols.get(CONTAINER_ID_FIELD) is None and not consts.get(CONTAINER_ID_FIELD)):
        return names, ni
    ids, ii = _strings(cols, consts, CONTAINER_ID_FIELD, n)
    if ni is None and ii is None:
        return [names[0] or ids[0][:SHORT_ID]], None
    pair = (np.zeros(n, np.int64) if ni is None else ni.astype(np.int64)) * len(ids)
    if ii is not None:
        pair += ii
    upair, inv = np.unique(pair, return_inverse=True)
    # two pairs may give one label (a name, with and without its id): _group_ids merges them
    return [names[p // len(ids)] or ids[p % len(ids)][:SHORT_ID] for p in upair.tolist()], inv.ravel()


class _CookieTable:
    """Last counter values per socket cookie: a big sorted part and a small sorted part
    (new sockets go to the small one, merged into the big one when it grows), so an
    update costs O(batch log n) and an insert amortized O(batch)."""

    def __init__(self) -> None:
        self.parts = [self._empty(), self._empty()]

    @staticmethod
    def _empty():
        return [np.zeros(0, np.uint64), np.zeros((0, NC), np.uint64), np.zeros(0, np.int64)]

    def __len__(self) -> int:
        return sum(len(p[0]) for p in self.parts)

    def update(self, ck: np.ndarray, cur: np.ndarray, gen: int, count_new: bool) -> np.ndarray:
        """Increase of each (unique) cookie's values since last seen; remembers cur."""
        delta = cur.copy() if count_new else np.zeros_like(cur)
        found = np.zeros(len(ck), bool)
        for keys, vals, gens in self.parts:
            if not len(keys):
                continue
            i = np.minimum(np.searchsorted(keys, ck), len(keys) - 1)
            hit = keys[i] == ck
            if hit.all():  # the steady state: every socket known, no masks needed
                prev = vals[i]
                delta = np.subtract(cur, prev, out=np.zeros_like(cur), where=cur > prev)
                vals[i] = np.maximum(prev, cur)
                g = gens[i]
                gens[i] = np.where(g < 0, g, gen)
                return delta
            hi = i[hit]
            prev, now = vals[hi], cur[hit]
            delta[hit] = np.where(now > prev, now - prev, 0)
            vals[hi] = np.maximum(prev, now)
            gens[hi] = np.where(gens[hi] < 0, gens[hi], gen)
            found |= hit
        new = ~found
        if new.any():
            self._insert(ck[new], cur[new], gen)
        return delta

    def _insert(self, ck, vals, gen) -> None:
        small = self.parts[1]
        keys = np.concatenate([small[0], ck])
        order = np.argsort(keys, kind="stable")
        self.parts[1] = [keys[order], np.concatenate([small[1], vals])[order],
                         np.concatenate([small[2], np.full(len(ck), gen, np.int64)])[order]]
        if len(self.parts[1][0]) > max(4096, len(self.parts[0][0]) // 4):
            self.compact(None)

    def forget(self, ck: np.ndarray) -> None:
        """Closed sockets: dropped at the next compaction."""
        for keys, _, gens in self.parts:
            if len(keys):
                i = np.minimum(np.searchsorted(keys, ck), len(keys) - 1)
                gens[i[keys[i] == ck]] = -1

    def compact(self, min_gen: int | None) -> None:
        """Merge both parts; drop forgotten cookies and (min_gen) those not seen since.

        Both parts are sorted, so the small one is merged in at its searchsorted
        positions: one new copy of the table at the peak. (Concatenating, filtering and
        argsorting made three, ~13 MB at 100,000 sockets, at the first poll's peak.)"""
        lo = 0 if min_gen is None else min_gen
        parts = []
        for keys, vals, gens in self.parts:
            keep = gens >= lo
            parts.append((keys, vals, gens) if keep.all() else (keys[keep], vals[keep], gens[keep]))
        (bk, bv, bg), (sk, sv, sg) = parts
        if not len(sk):
            self.parts = [[bk, bv, bg], self._empty()]
            return
        # a cookie is in one part only (update() finds it before inserting)
        self.parts = [merge_sorted([bk, bv, bg], [sk, sv, sg]), self._empty()]


class TcpMetrics(Collector):
    def __init__(self, max_groups: int = 100) -> None:
        self._lock = threading.Lock()
        self.max_groups = max_groups
        self._labels: list[tuple[str, str]] = [OTHER]   # slot -> (netns, container)
        self._slot: dict[tuple[str, str], int] = {OTHER: 0}
        self._free: list[int] = []
        size = 8
        self._counts = np.zeros((size, NC), np.float64)        # retransmits, sent, received
        self._events = np.zeros((size, 2), np.float64)         # opens, closes
        self._states = np.zeros((size, NSTATES), np.int64)     # shown (last complete poll)
        self._hist = np.zeros((size, NB), np.int64)
        self._rtt_sum = np.zeros(size, np.float64)
        self._p_states = np.zeros_like(self._states)          # pending (poll in progress)
        self._p_hist = np.zeros_like(self._hist)
        self._p_rtt_sum = np.zeros_like(self._rtt_sum)
        self._p_seen = np.zeros(size, bool)
        self._cookies = _CookieTable()
        self._changed: set[str] = set()  # namespaces with opens/closes since their last dump
        self._gen = 1            # complete polls done + 1
        self._baseline = True    # until the first complete poll

    # ---- configuration -------------------------------------------------------------------
    def configure(self, max_groups: int) -> None:
        with self._lock:
            self.max_groups = max(1, int(max_groups))

    # ---- the hook -------------------------------------------------------------------------
    def observe(self, cols, consts: Mapping | None = None) -> None:
        """One batch of decoded columns on its way to becoming records (any producer)."""
        consts = consts or {}
        n = _rows(cols)
        if n == 0:
            return
        netns, ns_idx = _strings(cols, consts, "netns", n)
        conts, ct_idx = _container_labels(cols, consts, n)
        trig = _ints(cols, consts, "trigger", n)
        state_col = cols.get("inet_diag_msg_state")  # absent: a producer without socket rows
        state = None if state_col is None else np.asarray(state_col).astype(np.intp) & (NSTATES - 1)
        rtt = cols.get("tcp_info_rtt")
        ck = cols.get("inet_diag_msg_socket_cookie")
        with self._lock:
            gid = self._group_ids(netns, ns_idx, conts, ct_idx, n)
            size = len(self._states)
            # events by trigger
            trig_arr = np.full(n, trig or 0, np.intp) if not isinstance(trig, np.ndarray) else trig.astype(np.intp)
            for j, t in enumerate((TRIGGER_OPEN, TRIGGER_CLOSE)):
                m = trig_arr == t
                if m.any():
                    self._events[:, j] += np.bincount(gid[m], minlength=size)
                    # their gauges are stale until the namespace is dumped again
                    self._changed.update(netns if ns_idx is None else
                                         (netns[i] for i in np.unique(ns_idx[m]).tolist()))
            # current sockets: rows of dumps (poll, refresh, resync) go to the pending snapshot
            snap = (trig_arr == TRIGGER_POLL) | (trig_arr == TRIGGER_REFRESH) | (trig_arr == TRIGGER_RESYNC)
            if state is not None and snap.any():
                g, s = gid[snap], state[snap]
                self._p_states += np.bincount(g * NSTATES + s, minlength=size * NSTATES).reshape(size, NSTATES)
                self._p_seen[g] = True
                if rtt is not None:
                    r = np.asarray(rtt)[snap].astype(np.float64)
                    has = r > 0   # listeners, time-wait and request sockets have no RTT
                    b = np.searchsorted(_RTT_BOUNDS_US, r[has], side="left")
                    self._p_hist += np.bincount(g[has] * NB + b, minlength=size * NB).reshape(size, NB)
                    self._p_rtt_sum += np.bincount(g[has], weights=r[has] / 1e6, minlength=size)
            if ck is not None:
                self._count_increases(np.asarray(ck, np.uint64), cols, gid, trig_arr, n, size)

    def _count_increases(self, ck, cols, gid, trig_arr, n, size) -> None:
        cur = np.zeros((n, NC), np.uint64)
        for j, (_, _, field) in enumerate(COUNTERS):
            c = cols.get(field)
            if c is not None:
                cur[:, j] = np.asarray(c, np.uint64)
        valid = ck != 0
        if not valid.all():
            ck, cur, gid, trig_arr = ck[valid], cur[valid], gid[valid], trig_arr[valid]
        if not len(ck):
            return
        # one socket may appear twice in a batch (bpf: open and close staged together):
        # take its largest values once
        uck, first, inv = np.unique(ck, return_index=True, return_inverse=True)
        if len(uck) != len(ck):
            order = np.argsort(inv, kind="stable")
            starts = np.flatnonzero(np.r_[True, np.diff(inv[order]) != 0])
            cur = np.maximum.reduceat(cur[order], starts, axis=0)
            closing = np.maximum.reduceat((trig_arr[order] == TRIGGER_CLOSE).astype(np.int8), starts) > 0
        else:
            uck, cur, first = ck, cur, np.arange(len(ck))
            closing = trig_arr == TRIGGER_CLOSE
        if len(uck) == len(ck) and not np.all(uck[:-1] < uck[1:]):
            order = np.argsort(uck, kind="stable")
            uck, cur, first, closing = uck[order], cur[order], first[order], closing[order]
        delta = self._cookies.update(uck, cur, self._gen, count_new=not self._baseline)
        g = gid[first]
        for j in range(NC):
            d = delta[:, j]
            nz = d > 0
            if nz.any():
                self._counts[:, j] += np.bincount(g[nz], weights=d[nz].astype(np.float64), minlength=size)
        if closing.any():
            self._cookies.forget(uck[closing])

    def poll_done(self, names: Iterable[str], complete: bool) -> None:
        """A poll finished. names: the namespaces it dumped; complete: it dumped every
        watched namespace (label sets of namespaces it did not cover are then freed)."""
        names = set(names)
        with self._lock:
            self._changed = set() if complete else self._changed - names
            for name in names:
                self._group_id((name, ""))   # a polled namespace without sockets shows zeros
            # "other" sums many namespaces: only a complete poll has all of them
            rows = [slot for slot, key in enumerate(self._labels) if key is not None and (
                complete if slot == 0 else (key[0] in names or self._p_seen[slot]))]
            self._states[rows] = self._p_states[rows]
            self._hist[rows] = self._p_hist[rows]
            self._rtt_sum[rows] = self._p_rtt_sum[rows]
            if complete:
                for slot, key in enumerate(self._labels):
                    if slot and key is not None and key[0] not in names and not self._p_seen[slot]:
                        self._release(slot)
            self._p_states[:] = 0
            self._p_hist[:] = 0
            self._p_rtt_sum[:] = 0
            self._p_seen[:] = False
            if complete:
                self._gen += 1
                self._baseline = False
                self._cookies.compact(self._gen - KEEP_UNSEEN_POLLS)

    def changed_namespaces(self) -> set[str]:
        """Namespaces that had opens or closes since they were last dumped: bpf mode
        refreshes them too, so their socket gauges follow (a namespace whose last socket
        closed has no live socket left to be refreshed for)."""
        with self._lock:
            return set(self._changed)

    # ---- label sets ---------------------------------------------------------------------
    def _group_ids(self, netns, ns_idx, conts, ct_idx, n) -> np.ndarray:
        if ns_idx is None and ct_idx is None:
            return np.full(n, self._group_id((netns[0], conts[0])), np.intp)
        ni = ns_idx if ns_idx is not None else np.zeros(n, np.intp)
        ci = ct_idx if ct_idx is not None else np.zeros(n, np.intp)
        pair = ni.astype(np.int64) * len(conts) + ci
        upair, inv = np.unique(pair, return_inverse=True)
        slots = np.array([self._group_id((netns[p // len(conts)], conts[p % len(conts)])) for p in upair.tolist()],
                         np.intp)
        return slots[inv.ravel()]

    def _group_id(self, key: tuple[str, str]) -> int:
        slot = self._slot.get(key)
        if slot is not None:
            return slot
        if len(self._slot) - 1 >= self.max_groups:
            return 0
        if self._free:
            slot = self._free.pop()
            self._labels[slot] = key
        else:
            slot = len(self._labels)
            self._labels.append(key)
            if slot >= len(self._states):
                self._grow(2 * len(self._states))
        self._slot[key] = slot
        return slot

    def _release(self, slot: int) -> None:
        key = self._labels[slot]
        del self._slot[key]
        self._labels[slot] = None
        for a in (self._counts, self._events, self._states, self._hist, self._rtt_sum):
            a[slot] = 0
        self._free.append(slot)

    def _grow(self, size: int) -> None:
        for name in ("_counts", "_events", "_states", "_hist", "_rtt_sum", "_p_states", "_p_hist",
                     "_p_rtt_sum", "_p_seen"):
            old = getattr(self, name)
            new = np.zeros((size,) + old.shape[1:], old.dtype)
            new[:len(old)] = old
            setattr(self, name, new)

    # ---- exposition ----------------------------------------------------------------------
    def collect(self):
        with self._lock:
            live = [(slot, key) for slot, key in enumerate(self._labels) if key is not None]
            states, hist, rtt_sum = self._states.copy(), self._hist.copy(), self._rtt_sum.copy()
            counts, events = self._counts.copy(), self._events.copy()
        labels = ["netns", "container"]
        sk = GaugeMetricFamily("xtcp2_tcp_sockets", "TCP sockets by state at the last complete poll",
                               labels=labels + ["state"])
        rt = GaugeHistogramMetricFamily("xtcp2_tcp_rtt_seconds",
                                        "Smoothed RTT (tcpi_rtt) of the sockets of the last complete poll "
                                        "that have one", labels=labels)
        cs = [CounterMetricFamily(name, hlp, labels=labels) for name, hlp, _ in COUNTERS]
        op = CounterMetricFamily("xtcp2_tcp_opens", "Connections opened (OPEN records, bpf mode)", labels=labels)
        cl = CounterMetricFamily("xtcp2_tcp_closes", "Connections closed (CLOSE records: bpf close events "
                                 "and the destroy groups)", labels=labels)
        for slot, key in live:
            lv = list(key)
            for s, name in STATE_NAMES.items():
                sk.add_metric(lv + [name], float(states[slot, s]))
            cum = np.cumsum(hist[slot])
            buckets = [(repr(b), float(c)) for b, c in zip(RTT_BUCKETS, cum[:-1].tolist())]
            buckets.append(("+Inf", float(cum[-1])))
            rt.add_metric(lv, buckets, float(rtt_sum[slot]))
            for j, fam in enumerate(cs):
                fam.add_metric(lv, float(counts[slot, j]))
            op.add_metric(lv, float(events[slot, 0]))
            cl.add_metric(lv, float(events[slot, 1]))
        yield sk
        yield rt
        yield from cs
        yield op
        yield cl


TCP = TcpMetrics()
REGISTRY.register(TCP)
