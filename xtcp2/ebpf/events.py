"""numpy view of struct xtcp2_event (bpf/xtcp2_events.h) and the ring buffer record framing."""
from __future__ import annotations

import numpy as np

EV_STATE = 1
EV_NETNS = 2
F_COUNTERS = 1
F_NOCOOKIE = 2
F_DURATION = 4
F_FULLINFO = 8

TCP_ESTABLISHED = 1
TCP_SYN_SENT = 2
TCP_SYN_RECV = 3
TCP_CLOSE = 7
TCP_LISTEN = 10

EVENT_DTYPE = np.dtype([
    ("ktime_ns", "<u8"), ("cookie", "<u8"), ("net_cookie", "<u8"), ("netns_ino", "<u4"),
    ("kind", "<u2"), ("family", "<u2"), ("oldstate", "u1"), ("newstate", "u1"), ("flags", "<u2"),
    ("sport", "<u2"), ("dport", "<u2"), ("saddr", "u1", 16), ("daddr", "u1", 16), ("pid", "<u4"), ("_pad0", "<u4"),
    ("bytes_acked", "<u8"), ("bytes_received", "<u8"), ("bytes_sent", "<u8"), ("bytes_retrans", "<u8"),
    ("duration_ns", "<u8"),
    ("segs_in", "<u4"), ("segs_out", "<u4"), ("data_segs_in", "<u4"), ("data_segs_out", "<u4"),
    ("srtt_us", "<u4"), ("rttvar_us", "<u4"), ("min_rtt_us", "<u4"), ("total_retrans", "<u4"),
    ("snd_cwnd", "<u4"), ("delivered", "<u4"), ("snd_mss", "<u4"), ("rcv_wnd", "<u4"),
    ("snd_wnd", "<u4"), ("reordering", "<u4"),
    ("snd_ssthresh", "<u4"), ("rcv_ssthresh", "<u4"), ("advmss", "<u4"), ("pmtu", "<u4"), ("rcv_mss", "<u4"),
    ("unacked", "<u4"), ("sacked", "<u4"), ("lost", "<u4"), ("retrans", "<u4"), ("delivered_ce", "<u4"),
    ("dsack_dups", "<u4"), ("reord_seen", "<u4"), ("rcv_ooopack", "<u4"), ("total_rto", "<u4"),
    ("total_rto_recoveries", "<u4"), ("total_rto_time", "<u4"), ("rcv_space", "<u4"), ("ca_state", "<u4"),
    ("pacing_rate", "<u8"), ("max_pacing_rate", "<u8"), ("delivery_rate", "<u8"), ("busy_time", "<u8"),
    ("rwnd_limited", "<u8"), ("sndbuf_limited", "<u8"),
    ("rto", "<u4"), ("ato", "<u4"), ("last_data_sent", "<u4"), ("last_data_recv", "<u4"), ("last_ack_recv", "<u4"),
    ("rcv_rtt", "<u4"), ("notsent_bytes", "<u4"), ("rehash", "<u4"),
    ("retransmits", "u1"), ("probes", "u1"), ("backoff", "u1"), ("options", "u1"), ("snd_wscale", "u1"),
    ("rcv_wscale", "u1"), ("delivery_rate_app_limited", "u1"), ("fastopen_client_fail", "u1"),
    ("ca_name", "S16"),
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
