/* struct xtcp2_tcp_info: what the CO-RE tcp_get_info() port (tcp_info.bpf.h) writes.
 * Embedded by both record layouts, struct xtcp2_event (tcp_events.h) and struct
 * xtcp2_iter_rec (tcp_iter.h); its Python mirror is TCP_INFO_FIELDS in
 * xtcp2/ebpf/tcp_info.py, checked field by field against the objects' BTF.
 * Same units as the kernel's struct tcp_info. 8-aligned, no implicit padding. */
#ifndef XTCP2_TCP_INFO_H
#define XTCP2_TCP_INFO_H

struct xtcp2_tcp_info {
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u32 segs_in;
	__u32 segs_out;
	__u32 data_segs_in;
	__u32 data_segs_out;
	__u32 srtt_us;          /* smoothed RTT, microseconds (tcpi_rtt) */
	__u32 rttvar_us;
	__u32 min_rtt_us;
	__u32 total_retrans;
	__u32 snd_cwnd;
	__u32 delivered;
	__u32 snd_mss;
	__u32 rcv_wnd;
	__u32 snd_wnd;
	__u32 reordering;
	__u32 snd_ssthresh;
	__u32 rcv_ssthresh;
	__u32 advmss;
	__u32 pmtu;
	__u32 rcv_mss;
	__u32 unacked;          /* packets_out; accept queue length on a listener */
	__u32 sacked;           /* sacked_out; accept queue limit on a listener */
	__u32 lost;
	__u32 retrans;          /* retrans_out */
	__u32 delivered_ce;
	__u32 dsack_dups;
	__u32 reord_seen;
	__u32 rcv_ooopack;
	__u32 total_rto;        /* 0 on kernels before 6.7 */
	__u32 total_rto_recoveries;
	__u32 total_rto_time;
	__u32 rcv_space;
	__u32 ca_state;
	__u64 pacing_rate;
	__u64 max_pacing_rate;
	__u64 delivery_rate;
	__u64 busy_time;        /* microseconds, like tcpi_busy_time */
	__u64 rwnd_limited;
	__u64 sndbuf_limited;
	__u32 rto;              /* microseconds */
	__u32 ato;
	__u32 last_data_sent;   /* milliseconds */
	__u32 last_data_recv;
	__u32 last_ack_recv;
	__u32 rcv_rtt;
	__u32 notsent_bytes;
	__u32 rehash;
	__u8  retransmits;
	__u8  probes;
	__u8  backoff;
	__u8  options;          /* TCPI_OPT_* */
	__u8  snd_wscale;
	__u8  rcv_wscale;
	__u8  delivery_rate_app_limited;
	__u8  fastopen_client_fail;
	char  ca_name[16];      /* congestion control algorithm */
};

#endif
