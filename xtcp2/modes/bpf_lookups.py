"""Targeted inet_diag reads after open events: exact lookups by socket, or one filtered
dump per namespace when many opens land together -> OPEN records."""
from __future__ import annotations

import contextlib
import logging
import time

import numpy as np

from ..config import Config
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..netlink import constants as c
from ..netlink.decode import decode_messages
from ..netlink.diag import Chunk, DumpAborted, NetlinkError, SockId, new_chunk
from ..netns.registry import Namespace
from .bpf_metrics import BPF_COALESCED, BPF_LOOKUPS
from .bpf_namespaces import NamespaceResolver
from .bpf_stage import Stage
from .tracker import Tracker

log = logging.getLogger(__name__)
_LOOKUP_STATES = c.ALL_STATES & ~((1 << 6) | (1 << 3) | (1 << 12))  # no TIME_WAIT / SYN_RECV mini sockets


def ns_consts(ns: Namespace | None, ino: int, trigger: int) -> dict:
    """Record constants of one namespace (an unwatched or unknown one is named by inode)."""
    if ns is None:
        return {"trigger": trigger, "netns_inode": ino, "netns": f"inode:{ino}"}
    return {"trigger": trigger, "netns_inode": ino, "netns": ns.name, "nsid": ns.nsid, "socket_fd": ns.diag.fileno()}


class Lookups:
    def __init__(self, config: Config, resolver: NamespaceResolver, tracker: Tracker, stage: Stage,
                 stats: dict, coalesce_threshold: int = 16) -> None:
        self.resolver = resolver
        self.tracker = tracker
        self.stage = stage
        self.stats = stats
        self.coalesce_threshold = coalesce_threshold
        self.host_sockets = 0          # sockets seen by the last resync, all namespaces
        self._chunk = new_chunk(4 << 20)
        self.busy = contextlib.nullcontext  # the bpf loop's RingDrain.busy while it runs
        self.configure(config)

    def configure(self, config: Config) -> None:
        self._ext = c.ext_mask(config.enabled_deserializers)
        self._wanted = c.wanted_attrs(config.enabled_deserializers)

    def run_due(self, now: float, force: bool = False) -> int:
        """Look up the opens whose coalescing window ended; returns records staged."""
        return sum(self.lookup(ino, ev) for ino, ev in self.tracker.due_opens(now, force))

    def coalesce_at(self) -> int:
        """Pending opens in one namespace above which one filtered dump beats exact lookups.

        A dump walks the host-wide TCP hash (~0.5 us per socket on the host, whatever
        the namespace); an exact lookup costs ~20 us. So with 100k sockets on the host,
        a dump only pays off beyond ~2,500 pending opens."""
        return max(self.coalesce_threshold, self.host_sockets // 40)

    def lookup(self, ino: int, ev: np.ndarray) -> int:
        ns = self.resolver.namespace(ino)
        if ns is None:
            if self.resolver.resolving(ino):
                self.tracker.requeue(ino, ev, time.monotonic() + 0.02)
            else:
                BPF_LOOKUPS.labels("no_namespace").inc(len(ev))
            return 0
        chunk = self._chunk
        chunk.reset()
        emitted = found = 0
        want = ev["cookie"]
        try:
            with ns.lock:
                # without cookies (classic tracepoint) only exact 4-tuple lookups can match
                if len(ev) >= self.coalesce_at() and not (ev["cookie"] == 0).any():
                    BPF_COALESCED.inc()
                    with self.busy():  # walks the host-wide hash: long on a big host
                        for fam in np.unique(ev["family"]).tolist():
                            # the reader yields whenever the chunk fills: consume it before advancing
                            for ch in ns.diag.dump(fam, self._ext, chunk, states=_LOOKUP_STATES):
                                e, f = self._stage_found(ch, ns, ino, ev)
                                emitted, found = emitted + e, found + f
                else:
                    for e in ev:
                        fam = int(e["family"])
                        alen = 16 if fam == c.AF_INET6 else 4
                        sid = SockId(int(e["sport"]), int(e["dport"]), bytes(e["saddr"][:alen]),
                                     bytes(e["daddr"][:alen]), cookie=int(e["cookie"]) or None)
                        # a callable source: replies of all lookups accumulate in one chunk
                        for _ in ns.diag.dump(fam, self._ext, lambda: chunk, sockid=sid):
                            pass
                    emitted, found = self._stage_found(chunk, ns, ino, ev)
        except (DumpAborted, NetlinkError, OSError) as err:
            BPF_LOOKUPS.labels("error").inc(len(ev))
            log.warning("netns %s: targeted read failed: %s", ns.name, err)
            return emitted
        BPF_LOOKUPS.labels("found").inc(found)
        BPF_LOOKUPS.labels("gone").inc(max(0, len(ev) - found))
        return emitted

    def _stage_found(self, chunk: Chunk, ns: Namespace, ino: int, ev: np.ndarray) -> tuple[int, int]:
        """OPEN records for the sockets in `chunk` whose cookie is among the events': (staged, found)."""
        cols = decode_messages(chunk.buf, chunk.message_offsets(), self._wanted, used=chunk.used)
        if not cols.n:
            return 0, 0
        want = ev["cookie"]
        ck = cols["inet_diag_msg_socket_cookie"]
        if want.all():
            keep = np.flatnonzero(np.isin(ck, want))
            if len(keep) != cols.n:
                cols = cols.take(keep)
                ck = cols["inet_diag_msg_socket_cookie"]
        # else cookie-less exact lookups: the kernel matched the 4-tuple, every reply counts
        n = cols.n
        if not n:
            return 0, 0
        lk = self.tracker.last_known
        uid = cols.get("inet_diag_msg_uid", np.zeros(n, np.uint32)).tolist()
        inode = cols.get("inet_diag_msg_inode", np.zeros(n, np.uint32)).tolist()
        cks = ck.tolist()
        for k, u, i in zip(cks, uid, inode):
            lk[k] = (int(u), int(i))
        kt = None
        if want.all():  # kernel times of the events these sockets answer (event->record latency)
            order = {k: i for i, k in enumerate(want.tolist())}
            kt = ev["ktime_ns"][[order[k] for k in cks if k in order]]
        self.stats["open"] += n
        return self.stage.add(cols, ns_consts(ns, ino, pb.XtcpFlatRecord.TRIGGER_OPEN), kt), n
