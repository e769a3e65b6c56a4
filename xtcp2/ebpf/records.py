"""XtcpFlatRecord columns of close records built from BPF close events.

The BPF program reads at TCP_CLOSE every field tcp_get_info() and tcp_diag_get_info()
would report (the sock_diag destroy broadcast, sent later from sk_destruct(), carries
the same values), plus the congestion control name.
"""
from __future__ import annotations

import socket

import numpy as np

from ..columns import BytesColumn, Columns

TCP_CLOSE = 7

# event field -> record field (tcp_info names); values already in tcp_info units
_COUNTERS = {
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


def close_columns(ev: np.ndarray, last_known: dict[int, tuple[int, int]] | None = None) -> Columns:
    """Columns of close records built from BPF close events (final counters via CO-RE),
    merged with what the open lookup knew (uid, inode) when available."""
    n = len(ev)
    fam = ev["family"].astype(np.uint32)
    alen = np.where(fam == socket.AF_INET6, 16, 4).astype(np.uint8)
    cols = Columns(n, {
        "inet_diag_msg_family": fam,
        "inet_diag_msg_state": np.full(n, TCP_CLOSE, np.uint32),
        "tcp_info_state": np.full(n, TCP_CLOSE, np.uint32),
        "inet_diag_msg_socket_source_port": ev["sport"].astype(np.uint32),
        "inet_diag_msg_socket_destination_port": ev["dport"].astype(np.uint32),
        "inet_diag_msg_socket_source": BytesColumn(np.ascontiguousarray(ev["saddr"]), alen),
        "inet_diag_msg_socket_destination": BytesColumn(np.ascontiguousarray(ev["daddr"]), alen.copy()),
        "inet_diag_msg_socket_cookie": ev["cookie"].astype(np.uint64),
    })
    for src, dst in _COUNTERS.items():
        cols[dst] = ev[src].astype(np.uint64 if ev.dtype[src].itemsize == 8 else np.uint32)
    names = ev["ca_name"]
    cols["congestion_algorithm_string"] = BytesColumn(
        np.frombuffer(names.tobytes(), np.uint8).reshape(n, 16).copy(),
        np.char.str_len(names).astype(np.uint8))
    if last_known:
        uid = np.zeros(n, np.uint32)
        ino = np.zeros(n, np.uint32)
        for i, ck in enumerate(ev["cookie"].tolist()):
            known = last_known.pop(ck, None)
            if known:
                uid[i], ino[i] = known
        cols["inet_diag_msg_uid"] = uid
        cols["inet_diag_msg_inode"] = ino
    return cols
