"""Python mirror of struct xtcp2_tcp_info (bpf/tcp_info.h), written by the CO-RE
tcp_get_info() port (bpf/tcp_info.bpf.h), and its mapping to record columns.

Both BPF record layouts embed it (close events, the socket iterator). TO_RECORD
names the record column of each member (xtcp2/collect/iter.py gives each the inet_diag
decoder's dtype, so a record is encoded the same whichever path read it).
"""
from __future__ import annotations

import numpy as np


# (struct member, numpy format) in struct order
TCP_INFO_FIELDS: list[tuple] = [
    ("bytes_acked", "<u8"), ("bytes_received", "<u8"), ("bytes_sent", "<u8"), ("bytes_retrans", "<u8"),
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
]
TCP_INFO_DTYPE = np.dtype(TCP_INFO_FIELDS)

# struct member -> record column (tcp_info names); values already in tcp_info units
TO_RECORD = {
    "bytes_acked": "tcp_info_bytes_acked",
    "bytes_received": "tcp_info_bytes_received",
    "bytes_sent": "tcp_info_bytes_sent",
    "bytes_retrans": "tcp_info_bytes_retrans",
    "segs_in": "tcp_info_segs_in",
    "segs_out": "tcp_info_segs_out",
    "data_segs_in": "tcp_info_data_segs_in",
    "data_segs_out": "tcp_info_data_segs_out",
    "srtt_us": "tcp_info_rtt",
    "rttvar_us": "tcp_info_rtt_var",
    "min_rtt_us": "tcp_info_min_rtt",
    "total_retrans": "tcp_info_total_retrans",
    "snd_cwnd": "tcp_info_snd_cwnd",
    "delivered": "tcp_info_delivered",
    "snd_mss": "tcp_info_snd_mss",
    "rcv_wnd": "tcp_info_rcv_wnd",
    "snd_wnd": "tcp_info_snd_wnd",
    "reordering": "tcp_info_reordering",
    "snd_ssthresh": "tcp_info_snd_ssthresh",
    "rcv_ssthresh": "tcp_info_rcv_ssthresh",
    "advmss": "tcp_info_adv_mss",
    "pmtu": "tcp_info_pmtu",
    "rcv_mss": "tcp_info_rcv_mss",
    "unacked": "tcp_info_unacked",
    "sacked": "tcp_info_sacked",
    "lost": "tcp_info_lost",
    "retrans": "tcp_info_retrans",
    "delivered_ce": "tcp_info_delivered_ce",
    "dsack_dups": "tcp_info_dsack_dups",
    "reord_seen": "tcp_info_reord_seen",
    "rcv_ooopack": "tcp_info_rcv_ooopack",
    "total_rto": "tcp_info_total_rto",
    "total_rto_recoveries": "tcp_info_total_rto_recoveries",
    "total_rto_time": "tcp_info_total_rto_time",
    "rcv_space": "tcp_info_rcv_space",
    "ca_state": "tcp_info_ca_state",
    "pacing_rate": "tcp_info_pacing_rate",
    "max_pacing_rate": "tcp_info_max_pacing_rate",
    "delivery_rate": "tcp_info_delivery_rate",
    "busy_time": "tcp_info_busy_time",
    "rwnd_limited": "tcp_info_rwnd_limited",
    "sndbuf_limited": "tcp_info_sndbuf_limited",
    "rto": "tcp_info_rto",
    "ato": "tcp_info_ato",
    "last_data_sent": "tcp_info_last_data_sent",
    "last_data_recv": "tcp_info_last_data_recv",
    "last_ack_recv": "tcp_info_last_ack_recv",
    "rcv_rtt": "tcp_info_rcv_rtt",
    "notsent_bytes": "tcp_info_not_sent_bytes",
    "rehash": "tcp_info_rehash",
    "retransmits": "tcp_info_retransmits",
    "probes": "tcp_info_probes",
    "backoff": "tcp_info_backoff",
    "options": "tcp_info_options",
    "snd_wscale": "tcp_info_send_scale",
    "rcv_wscale": "tcp_info_rcv_scale",
    "delivery_rate_app_limited": "tcp_info_delivery_rate_app_limited",
    "fastopen_client_fail": "tcp_info_fast_open_client_failed",
}
