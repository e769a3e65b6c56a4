"""What `xtcp2 top` shows, independent of the screen: live connections built from records.

Records arrive from the daemon's stream or from local polls. Each connection is keyed by
(namespace inode, socket cookie), the kernel's own identity for a socket. Rates come from
consecutive samples of the same connection; a connection leaves the table at its CLOSE
record, or when a full poll no longer lists it, or when it has not been refreshed for a
few refresh periods (a stream from a daemon whose poll we do not see).
"""
from __future__ import annotations

import ipaddress
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from ..gen.xtcp_flat_record.v1.xtcp_flat_record_pb2 import XtcpFlatRecord
from .filter import Predicate, state_name

HISTORY = 60  # samples kept per connection for the sparklines
TRIGGER_CLOSE = XtcpFlatRecord.TRIGGER_CLOSE


def _ip(raw: bytes):
    if len(raw) not in (4, 16):
        return None
    ip = ipaddress.ip_address(raw)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        return ip.ipv4_mapped
    return ip


def endpoint(ip, port: int) -> str:
    if ip is None:
        return f"*:{port}"
    return f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"


@dataclass
class Conn:
    """One connection as the table shows it; also the view the filter evaluates."""

    key: tuple[int, int]
    netns: str
    container: str
    process: str
    state: int
    src: object
    sport: int
    dst: object
    dport: int
    rtt_ms: float = 0.0
    cwnd: int = 0
    retrans: int = 0
    bytes_acked: int = 0
    bytes_received: int = 0
    first_seen: float = 0.0
    last_seen: float = 0.0
    tx_bps: float = 0.0
    rx_bps: float = 0.0
    retrans_delta: int = 0
    rtt_hist: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    tx_hist: deque = field(default_factory=lambda: deque(maxlen=HISTORY))
    rx_hist: deque = field(default_factory=lambda: deque(maxlen=HISTORY))

    @property
    def local(self) -> str:
        return endpoint(self.src, self.sport)

    @property
    def peer(self) -> str:
        return endpoint(self.dst, self.dport)

    @property
    def state_text(self) -> str:
        return state_name(self.state)

    def age(self, now: float) -> float:
        return max(0.0, now - self.first_seen)

    @property
    def owner(self) -> str:
        return self.container or self.netns


# Table columns: (title, sort key). The sort key takes (conn, now).
COLUMNS: list[tuple[str, object]] = [
    ("NETNS", lambda c, now: c.netns),
    ("CONTAINER", lambda c, now: c.container),
    ("PROCESS", lambda c, now: c.process),
    ("STATE", lambda c, now: c.state_text),
    ("LOCAL", lambda c, now: (c.src.version if c.src else 0, int(c.src) if c.src else 0, c.sport)),
    ("PEER", lambda c, now: (c.dst.version if c.dst else 0, int(c.dst) if c.dst else 0, c.dport)),
    ("RTT_MS", lambda c, now: c.rtt_ms),
    ("CWND", lambda c, now: c.cwnd),
    ("TX/s", lambda c, now: c.tx_bps),
    ("RX/s", lambda c, now: c.rx_bps),
    ("RETRANS", lambda c, now: c.retrans),
    ("AGE", lambda c, now: c.age(now)),
]
COLUMN_NAMES = [name for name, _ in COLUMNS]


def human_bytes(v: float) -> str:
    for unit in ("B", "K", "M", "G", "T"):
        if abs(v) < 1024 or unit == "T":
            return f"{v:.0f}{unit}" if unit == "B" else f"{v:.1f}{unit}"
        v /= 1024
    return f"{v:.1f}T"


def human_age(s: float) -> str:
    s = int(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def cells(c: Conn, now: float) -> list[str]:
    return [c.netns, c.container or "-", c.process or "-", c.state_text, c.local, c.peer,
            f"{c.rtt_ms:.2f}", str(c.cwnd), human_bytes(c.tx_bps), human_bytes(c.rx_bps),
            str(c.retrans), human_age(c.age(now))]


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return 0.0
    idx = min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[idx]


@dataclass
class Summary:
    total: int
    by_state: dict[str, int]
    opens_per_s: float
    closes_per_s: float
    rtt_p50_ms: float
    rtt_p99_ms: float
    retrans_per_s: float


@dataclass
class Group:
    name: str
    conns: int
    established: int
    tx_bps: float
    rx_bps: float
    rtt_p50_ms: float
    retrans: int


class ConnTable:
    """Thread-safe: a source thread ingests, the screen reads snapshots."""

    def __init__(self, clock=time.monotonic, stale_after: float = 0.0) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.conns: dict[tuple[int, int], Conn] = {}
        self._events: deque = deque()  # (t, opens, closes, retrans)
        self.stale_after = stale_after  # 0 = derive from the refresh period seen
        self._period = 0.0
        self.records = 0

    # ---- ingest ------------------------------------------------------------------
    def ingest(self, records, full_poll: bool = False) -> None:
        """Apply a batch of XtcpFlatRecord. With full_poll, a connection not in the batch is closed."""
        now = self._clock()
        opens = closes = retrans = 0
        seen: set[tuple[int, int]] = set()
        with self._lock:
            for r in records:
                self.records += 1
                key = (r.netns_inode, r.inet_diag_msg_socket_cookie)
                if r.trigger == TRIGGER_CLOSE:
                    self.conns.pop(key, None)  # a close of a connection never listed still counts
                    closes += 1
                    continue
                seen.add(key)
                c = self.conns.get(key)
                if c is None:
                    c = Conn(key, r.netns, r.container_name or r.container_id[:12], self._process(r),
                             r.inet_diag_msg_state, _ip(r.inet_diag_msg_socket_source),
                             r.inet_diag_msg_socket_source_port, _ip(r.inet_diag_msg_socket_destination),
                             r.inet_diag_msg_socket_destination_port, first_seen=now, last_seen=now)
                    c.bytes_acked, c.bytes_received = r.tcp_info_bytes_acked, r.tcp_info_bytes_received
                    c.retrans = r.tcp_info_total_retrans
                    self.conns[key] = c
                    opens += 1
                else:
                    dt = now - c.last_seen
                    if dt > 0:
                        c.tx_bps = max(0, r.tcp_info_bytes_acked - c.bytes_acked) / dt
                        c.rx_bps = max(0, r.tcp_info_bytes_received - c.bytes_received) / dt
                        self._period = dt if not self._period else 0.8 * self._period + 0.2 * dt
                    c.retrans_delta = max(0, r.tcp_info_total_retrans - c.retrans)
                    retrans += c.retrans_delta
                    c.state = r.inet_diag_msg_state
                    c.bytes_acked, c.bytes_received = r.tcp_info_bytes_acked, r.tcp_info_bytes_received
                    c.retrans = r.tcp_info_total_retrans
                    c.last_seen = now
                    c.process = self._process(r) or c.process
                c.rtt_ms = r.tcp_info_rtt / 1000.0
                c.cwnd = r.tcp_info_snd_cwnd
                c.rtt_hist.append(c.rtt_ms)
                c.tx_hist.append(c.tx_bps)
                c.rx_hist.append(c.rx_bps)
            if full_poll:
                gone = [k for k in self.conns if k not in seen]
                for k in gone:
                    del self.conns[k]
                closes += len(gone)
            else:
                closes += self._expire_locked(now)
            self._events.append((now, opens, closes, retrans))
            while self._events and now - self._events[0][0] > 10.0:
                self._events.popleft()

    @staticmethod
    def _process(r) -> str:
        comm = getattr(r, "comm", "")  # present once the schema carries process fields
        return comm or ""

    def _expire_locked(self, now: float) -> int:
        limit = self.stale_after or (3 * self._period if self._period else 0.0)
        if not limit:
            return 0
        gone = [k for k, c in self.conns.items() if now - c.last_seen > limit]
        for k in gone:
            del self.conns[k]
        return len(gone)

    def expire(self) -> None:
        with self._lock:
            n = self._expire_locked(self._clock())
            if n:
                self._events.append((self._clock(), 0, n, 0))

    # ---- read ------------------------------------------------------------------------
    def snapshot(self, keep: Predicate | None = None) -> list[Conn]:
        with self._lock:
            conns = list(self.conns.values())
        return [c for c in conns if keep is None or keep(c)]

    def summary(self, conns: list[Conn]) -> Summary:
        now = self._clock()
        by_state: dict[str, int] = {}
        for c in conns:
            by_state[c.state_text] = by_state.get(c.state_text, 0) + 1
        rtts = sorted(c.rtt_ms for c in conns if c.state == 1)
        with self._lock:
            events = [e for e in self._events if now - e[0] <= 10.0]
        span = max(1.0, now - events[0][0]) if len(events) > 1 else 1.0
        # the first batch is the initial table, not opens
        counted = events[1:] if len(events) > 1 else []
        return Summary(
            total=len(conns), by_state=by_state,
            opens_per_s=sum(e[1] for e in counted) / span,
            closes_per_s=sum(e[2] for e in counted) / span,
            rtt_p50_ms=percentile(rtts, 0.50), rtt_p99_ms=percentile(rtts, 0.99),
            retrans_per_s=sum(e[3] for e in counted) / span,
        )


def sort_conns(conns: list[Conn], column: str, reverse: bool, now: float) -> list[Conn]:
    key = dict(COLUMNS)[column]
    return sorted(conns, key=lambda c: key(c, now), reverse=reverse)


def group_conns(conns: list[Conn], by: str) -> list[Group]:
    """Aggregate per namespace ('netns') or container ('container'; host sockets under '-')."""
    buckets: dict[str, list[Conn]] = {}
    for c in conns:
        name = c.netns if by == "netns" else (c.container or "-")
        buckets.setdefault(name, []).append(c)
    groups = []
    for name, members in buckets.items():
        rtts = sorted(c.rtt_ms for c in members if c.state == 1)
        groups.append(Group(name, len(members), sum(1 for c in members if c.state == 1),
                            sum(c.tx_bps for c in members), sum(c.rx_bps for c in members),
                            percentile(rtts, 0.5), sum(c.retrans for c in members)))
    return groups
