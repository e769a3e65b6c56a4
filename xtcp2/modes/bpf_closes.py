"""Close records in bpf mode: one per socket, from whichever source reports it first.

BPF close events carry every tcp_info field read at TCP_CLOSE: they are the record.
A destroy broadcast (sent later, from sk_destruct) becomes the record only for a
socket whose BPF event was lost or never came (it never changed state); the BPF
socket filter drops the others in the kernel, and `not_reported` drops what slips
through before decoding. A close in a namespace created a moment ago waits briefly
for discovery to name it.
"""
from __future__ import annotations

import time
from typing import Hashable

import numpy as np

from ..columns import Columns
from ..ebpf.records import close_columns
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..netlink.destroy import DestroyWatcher
from ..netns.registry import NamespaceTable
from .bpf_lookups import ns_consts
from .bpf_metrics import BPF_CLOSES
from .bpf_namespaces import NamespaceResolver
from .bpf_stage import Stage
from .tracker import Tracker

NEW_NETNS_WAIT = 1.0  # s a close waits for its new namespace to be discovered (its name is mounted)
BROADCAST_READS = 4   # recvs per step: one multicast message per recv, so drain harder than the ring
T = pb.XtcpFlatRecord


class CloseReconciler:
    def __init__(self, table: NamespaceTable, resolver: NamespaceResolver, tracker: Tracker,
                 watcher: DestroyWatcher, stage: Stage, stats: dict) -> None:
        self.table = table
        self.resolver = resolver
        self.tracker = tracker
        self.watcher = watcher
        self.stage = stage
        self.stats = stats
        self._held: list[tuple[Hashable, Columns]] = []   # broadcasts waiting for the ring to be drained
        self._waiting: dict[int, tuple[float, list]] = {}  # netns inode -> (until, close events)

    def step(self, drained: bool, force: bool = False) -> tuple[int, bool]:
        """Stage the close records due now: (records staged, broadcasts lost?).
        drained: this step read the ring buffer to its end."""
        emitted = 0
        ev = self.tracker.due_closes(time.monotonic(), force)
        if len(ev):
            emitted += self._stage_bpf(ev, force)
        for part in self._resolved(force):  # one namespace each: no concatenated copy
            emitted += self._stage_bpf(part, force=True)
        # A broadcast is sent after its socket's TCP_CLOSE event was committed. One read
        # before this step's ring drain found no close record for these sockets: unless
        # the ring lost their events, the drain has reported them by now.
        if drained or force:
            emitted += self._stage_held()
        lost = False
        for _ in range(BROADCAST_READS):
            # sockets already reported (nearly all of them) are skipped before decoding
            got = self.watcher.poll(0, keep=self.not_reported)
            for key, cols, overrun in got:
                lost |= overrun
                if cols.n:
                    self._held.append((key, cols))
            if not got:
                break
        if force:
            emitted += self._stage_held()
        return emitted, lost

    def holding(self) -> bool:
        """Broadcasts wait for one more ring drain."""
        return bool(self._held)

    def deadlines(self) -> list[float]:
        return [due for due, _ in self._waiting.values()]

    def pending(self) -> int:
        return sum(len(p) for _, ps in self._waiting.values() for p in ps)

    def not_reported(self, cookies: np.ndarray) -> np.ndarray:
        """Broadcasts worth decoding: sockets without a close record yet."""
        keep = self.tracker.not_final(cookies)
        dup = len(keep) - int(keep.sum())
        if dup:
            BPF_CLOSES.labels("destroy_late").inc(dup)
        return keep

    # ---- internals -------------------------------------------------------------------
    def _stage_held(self) -> int:
        held, self._held = self._held, []
        return sum(self._stage_destroy(key, cols) for key, cols in held)

    def _stage_destroy(self, key: Hashable, cols: Columns) -> int:
        ns = self.table.by_key.get(key)
        ino = key[1] if isinstance(key, tuple) else 0
        ck = cols["inet_diag_msg_socket_cookie"]
        keep = self.tracker.not_final(ck)
        if not keep.all():
            BPF_CLOSES.labels("destroy_late").inc(int((~keep).sum()))
            cols = cols.take(np.flatnonzero(keep))
            ck = cols["inet_diag_msg_socket_cookie"]
        n = cols.n
        if not n:
            return 0
        self.tracker.final_emitted(ck, time.monotonic(), 1)
        BPF_CLOSES.labels("destroy").inc(n)
        self.stats["close_destroy"] += n
        kts = self.tracker.close_ktime
        kt = np.fromiter((kts.get(c, 0) for c in ck.tolist()), np.int64, n)
        return self.stage.add(cols, ns_consts(ns, ino, T.TRIGGER_CLOSE), kt[kt > 0], "close_destroy")

    def _stage_bpf(self, ev: np.ndarray, force: bool = False) -> int:
        """Close records from BPF close events; force: now, even for unknown namespaces."""
        emitted = 0
        now = time.monotonic()
        inos = ev["netns_ino"]
        for ino in np.unique(inos).tolist():
            mine = inos == ino
            part = ev if mine.all() else ev[mine]  # one namespace (nearly always): no copy
            ns = self.resolver.namespace(ino)
            if ns is None and not force and (self.resolver.resolving(ino) or ino in self._waiting):
                # a namespace created a moment ago (`ip netns add` mounts its name after
                # the first sockets may already have closed): wait for discovery, briefly
                due, parts = self._waiting.setdefault(ino, (now + NEW_NETNS_WAIT, []))
                parts.append(part)
                continue
            if ns is None and self.table.names:
                BPF_CLOSES.labels("not_watched").inc(len(part))  # --netns restricts what we report
                continue
            if ns is not None and (part["cookie"] == 0).any() and ns.ref.key in self.watcher.keys():
                # classic-tracepoint fallback: a close without a cookie cannot be matched
                # with its broadcast, and the broadcast (watched here) is the record
                nock = part["cookie"] == 0
                BPF_CLOSES.labels("no_cookie_broadcast").inc(int(nock.sum()))
                part = part[~nock]
                if not len(part):
                    continue
            cols = close_columns(part, self.tracker.last_known)
            BPF_CLOSES.labels("bpf").inc(len(part))
            self.stats["close_bpf"] += len(part)
            emitted += self.stage.add(cols, ns_consts(ns, ino, T.TRIGGER_CLOSE), part["ktime_ns"], "close_bpf")
        return emitted

    def _resolved(self, force: bool) -> list[np.ndarray]:
        """Waiting closes whose namespace is known now or whose wait is over."""
        now = time.monotonic()
        ready = []
        for ino, (due, parts) in list(self._waiting.items()):
            if force or due <= now or self.table.by_inode(ino) is not None:
                del self._waiting[ino]
                ready.extend(parts)
        return ready
