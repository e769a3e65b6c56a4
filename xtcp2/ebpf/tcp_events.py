"""Python mirror of bpf/tcp_events.h: numpy view of struct xtcp2_event and the ring buffer record framing.

Field names and offsets are checked against the object's BTF by
tests/unit/test_bpf_contract.py (xtcp2/ebpf/btf_check.py), the size again at load.
"""
from __future__ import annotations

import enum

import numpy as np

from .tcp_info import TCP_INFO_FIELDS


class Stat(enum.IntEnum):
    """Indices of the per-CPU `stats` map (enum xtcp2_stat in bpf/tcp_events.h)."""

    RESERVE_FAILED = 0
    SUBMITTED = 1
    BROADCAST_FILTERED = 2


EV_STATE = 1
EV_NETNS = 2
F_COUNTERS = 1
F_NOCOOKIE = 2
F_DURATION = 4
F_FULLINFO = 8
F_OWNER = 16     # pid and comm name the owner: the task in connect() (at SYN_SENT) or listen()

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_CLOSE = 7
TCP_LISTEN = 10

EVENT_DTYPE = np.dtype([
    ("ktime_ns", "<u8"), ("cookie", "<u8"), ("net_cookie", "<u8"), ("netns_ino", "<u4"),
    ("kind", "<u2"), ("family", "<u2"), ("oldstate", "u1"), ("newstate", "u1"), ("flags", "<u2"),
    ("sport", "<u2"), ("dport", "<u2"), ("saddr", "u1", 16), ("daddr", "u1", 16), ("pid", "<u4"), ("_pad0", "<u4"),
    ("comm", "S16"), ("duration_ns", "<u8"),
    *TCP_INFO_FIELDS,  # struct xtcp2_tcp_info ti, flattened (same bytes)
])
EVENT_SIZE = EVENT_DTYPE.itemsize  # checked against the object's xtcp2_event_size at load

# Ring buffer framing (include/uapi/linux/bpf.h): an 8-byte header {u32 len, u32 pg_off}
# before each sample, records 8-aligned. Every record here has the same size.
RB_HDR = 8
RB_BUSY = 1 << 31
RB_DISCARD = 1 << 30
RECORD_STRIDE = (RB_HDR + EVENT_SIZE + 7) & ~7
RECORD_DTYPE = np.dtype({
    "names": ["rb_len", "ev"],
    "formats": ["<u4", EVENT_DTYPE],
    "offsets": [0, RB_HDR],
    "itemsize": RECORD_STRIDE,
})
