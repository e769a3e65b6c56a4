"""Byte layouts of inet_diag structures, as (proto field, byte offset, numpy dtype).

One table per rtattr type. Offsets are from the start of the attribute payload (or of
struct inet_diag_msg). A field is decoded only when offset + size fits in the length
the kernel actually sent, so a shorter struct from an older kernel leaves the newer
fields unset instead of reading the next attribute.
"""
from __future__ import annotations

from . import constants as c

INET_DIAG_MSG = [
    ("inet_diag_msg_family", 0, "u1"),
    ("inet_diag_msg_state", 1, "u1"),
    ("inet_diag_msg_timer", 2, "u1"),
    ("inet_diag_msg_retrans", 3, "u1"),
    ("inet_diag_msg_socket_source_port", 4, ">u2"),
    ("inet_diag_msg_socket_destination_port", 6, ">u2"),
    # src 8..24, dst 24..40: handled as address columns
    ("inet_diag_msg_socket_interface", 40, "<u4"),
    ("inet_diag_msg_socket_cookie", 44, "<u8"),
    ("inet_diag_msg_expires", 52, "<u4"),
    ("inet_diag_msg_rqueue", 56, "<u4"),
    ("inet_diag_msg_wqueue", 60, "<u4"),
    ("inet_diag_msg_uid", 64, "<u4"),
    ("inet_diag_msg_inode", 68, "<u4"),
]
SRC_OFFSET, DST_OFFSET = 8, 24

# struct tcp_info (include/uapi/linux/tcp.h). 224 bytes on 4.19, 232 on 5.4-6.1,
# 240 on 6.6, 248 on 6.8+; 7.0 appends fields this schema has no columns for.
TCP_INFO = [
    ("tcp_info_state", 0, "u1"),
    ("tcp_info_ca_state", 1, "u1"),
    ("tcp_info_retransmits", 2, "u1"),
    ("tcp_info_probes", 3, "u1"),
    ("tcp_info_backoff", 4, "u1"),
    ("tcp_info_options", 5, "u1"),
    # byte 6: snd_wscale:4 | rcv_wscale:4; byte 7: delivery_rate_app_limited:1,
    # fastopen_client_fail:2 -- see TCP_INFO_BITFIELDS
    ("tcp_info_rto", 8, "<u4"),
    ("tcp_info_ato", 12, "<u4"),
    ("tcp_info_snd_mss", 16, "<u4"),
    ("tcp_info_rcv_mss", 20, "<u4"),
    ("tcp_info_unacked", 24, "<u4"),
    ("tcp_info_sacked", 28, "<u4"),
    ("tcp_info_lost", 32, "<u4"),
    ("tcp_info_retrans", 36, "<u4"),
    ("tcp_info_fackets", 40, "<u4"),
    ("tcp_info_last_data_sent", 44, "<u4"),
    ("tcp_info_last_ack_sent", 48, "<u4"),
    ("tcp_info_last_data_recv", 52, "<u4"),
    ("tcp_info_last_ack_recv", 56, "<u4"),
    ("tcp_info_pmtu", 60, "<u4"),
    ("tcp_info_rcv_ssthresh", 64, "<u4"),
    ("tcp_info_rtt", 68, "<u4"),
    ("tcp_info_rtt_var", 72, "<u4"),
    ("tcp_info_snd_ssthresh", 76, "<u4"),
    ("tcp_info_snd_cwnd", 80, "<u4"),
    ("tcp_info_adv_mss", 84, "<u4"),
    ("tcp_info_reordering", 88, "<u4"),
    ("tcp_info_rcv_rtt", 92, "<u4"),
    ("tcp_info_rcv_space", 96, "<u4"),
    ("tcp_info_total_retrans", 100, "<u4"),
    ("tcp_info_pacing_rate", 104, "<u8"),
    ("tcp_info_max_pacing_rate", 112, "<u8"),
    ("tcp_info_bytes_acked", 120, "<u8"),
    ("tcp_info_bytes_received", 128, "<u8"),
    ("tcp_info_segs_out", 136, "<u4"),
    ("tcp_info_segs_in", 140, "<u4"),
    ("tcp_info_not_sent_bytes", 144, "<u4"),
    ("tcp_info_min_rtt", 148, "<u4"),
    ("tcp_info_data_segs_in", 152, "<u4"),
    ("tcp_info_data_segs_out", 156, "<u4"),
    ("tcp_info_delivery_rate", 160, "<u8"),
    ("tcp_info_busy_time", 168, "<u8"),
    ("tcp_info_rwnd_limited", 176, "<u8"),
    ("tcp_info_sndbuf_limited", 184, "<u8"),
    ("tcp_info_delivered", 192, "<u4"),
    ("tcp_info_delivered_ce", 196, "<u4"),
    ("tcp_info_bytes_sent", 200, "<u8"),
    ("tcp_info_bytes_retrans", 208, "<u8"),
    ("tcp_info_dsack_dups", 216, "<u4"),
    ("tcp_info_reord_seen", 220, "<u4"),
    ("tcp_info_rcv_ooopack", 224, "<u4"),
    ("tcp_info_snd_wnd", 228, "<u4"),
    ("tcp_info_rcv_wnd", 232, "<u4"),
    ("tcp_info_rehash", 236, "<u4"),
    ("tcp_info_total_rto", 240, "<u2"),
    ("tcp_info_total_rto_recoveries", 242, "<u2"),
    ("tcp_info_total_rto_time", 244, "<u4"),
]
# (proto field, byte offset, shift, mask)
TCP_INFO_BITFIELDS = [
    ("tcp_info_send_scale", 6, 0, 0x0F),
    ("tcp_info_rcv_scale", 6, 4, 0x0F),
    ("tcp_info_delivery_rate_app_limited", 7, 0, 0x01),
    ("tcp_info_fast_open_client_failed", 7, 1, 0x03),
]

MEMINFO = [
    ("mem_info_rmem", 0, "<u4"),
    ("mem_info_wmem", 4, "<u4"),
    ("mem_info_fmem", 8, "<u4"),
    ("mem_info_tmem", 12, "<u4"),
]
# SK_MEMINFO_* indices of the u32 array
SKMEMINFO = [
    ("sk_mem_info_rmem_alloc", 0, "<u4"),
    ("sk_mem_info_rcv_buf", 4, "<u4"),
    ("sk_mem_info_wmem_alloc", 8, "<u4"),
    ("sk_mem_info_snd_buf", 12, "<u4"),
    ("sk_mem_info_fwd_alloc", 16, "<u4"),
    ("sk_mem_info_wmem_queued", 20, "<u4"),
    ("sk_mem_info_optmem", 24, "<u4"),
    ("sk_mem_info_backlog", 28, "<u4"),
    ("sk_mem_info_drops", 32, "<u4"),
]
VEGASINFO = [
    ("vegas_info_enabled", 0, "<u4"),
    ("vegas_info_rtt_cnt", 4, "<u4"),
    ("vegas_info_rtt", 8, "<u4"),
    ("vegas_info_min_rtt", 12, "<u4"),
]
DCTCPINFO = [
    ("dctcp_info_enabled", 0, "<u2"),
    ("dctcp_info_ce_state", 2, "<u2"),
    ("dctcp_info_alpha", 4, "<u4"),
    ("dctcp_info_ab_ecn", 8, "<u4"),
    ("dctcp_info_ab_tot", 12, "<u4"),
]
BBRINFO = [
    ("bbr_info_bw_lo", 0, "<u4"),
    ("bbr_info_bw_hi", 4, "<u4"),
    ("bbr_info_min_rtt", 8, "<u4"),
    ("bbr_info_pacing_gain", 12, "<u4"),
    ("bbr_info_cwnd_gain", 16, "<u4"),
]

SCALAR_ATTRS = {
    c.INET_DIAG_MEMINFO: MEMINFO,
    c.INET_DIAG_INFO: TCP_INFO,
    c.INET_DIAG_SKMEMINFO: SKMEMINFO,
    c.INET_DIAG_VEGASINFO: VEGASINFO,
    c.INET_DIAG_DCTCPINFO: DCTCPINFO,
    c.INET_DIAG_BBRINFO: BBRINFO,
    c.INET_DIAG_TOS: [("type_of_service", 0, "u1")],
    c.INET_DIAG_TCLASS: [("traffic_class", 0, "u1")],
    c.INET_DIAG_SHUTDOWN: [("shutdown_state", 0, "u1")],
    c.INET_DIAG_CLASS_ID: [("class_id", 0, "<u4")],
    c.INET_DIAG_CGROUP_ID: [("c_group", 0, "<u8")],
    c.INET_DIAG_SOCKOPT: [("sock_opt", 0, "<u2")],
}

# INET_DIAG_CONG name -> CongestionAlgorithm enum value
CONGESTION_ENUM = {
    b"cubic": 1, b"dctcp": 2, b"vegas": 3, b"prague": 4,
    b"bbr": 5, b"bbr1": 5, b"bbr2": 6, b"bbr3": 7,
}
CONG_NAME_MAX = 16  # TCP_CA_NAME_MAX
