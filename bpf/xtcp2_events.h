/* Event layout shared by the BPF programs (tcp_events.bpf.c) and the Python
 * consumer (xtcp2/ebpf/events.py mirrors it as a numpy dtype; keep both in step:
 * the loader checks sizeof via the .rodata constant xtcp2_event_size).
 * Fixed-size, naturally aligned, no implicit padding. */
#ifndef XTCP2_EVENTS_H
#define XTCP2_EVENTS_H

#define XTCP2_EV_STATE 1   /* TCP state change (ESTABLISHED, LISTEN, CLOSE) */
#define XTCP2_EV_NETNS 2   /* a task entered a network namespace not seen before */

/* flags */
#define XTCP2_F_COUNTERS 1 /* final counters below are valid (newstate == CLOSE) */
#define XTCP2_F_NOCOOKIE 2 /* classic tracepoint and the socket never got a cookie */
#define XTCP2_F_DURATION 4 /* duration_ns is valid (the open was seen) */
#define XTCP2_F_FULLINFO 8 /* every tcp_info field below is valid too */

struct xtcp2_event {
	__u64 ktime_ns;
	__u64 cookie;           /* == inet_diag idiag_cookie */
	__u64 net_cookie;       /* never reused, unlike the inode */
	__u32 netns_ino;
	__u16 kind;
	__u16 family;           /* AF_INET / AF_INET6 */
	__u8  oldstate;
	__u8  newstate;
	__u16 flags;
	__u16 sport;            /* host order */
	__u16 dport;            /* host order */
	__u8  saddr[16];        /* 4 bytes used for AF_INET */
	__u8  daddr[16];
	__u32 pid;              /* tgid of the current task (often the kernel's softirq) */
	__u32 _pad0;
	/* final counters from struct tcp_sock, valid with XTCP2_F_COUNTERS */
	__u64 bytes_acked;
	__u64 bytes_received;
	__u64 bytes_sent;
	__u64 bytes_retrans;
	__u64 duration_ns;      /* since SYN_SENT/SYN_RECV/ESTABLISHED, with XTCP2_F_DURATION */
	__u32 segs_in;
	__u32 segs_out;
	__u32 data_segs_in;
	__u32 data_segs_out;
	__u32 srtt_us;          /* smoothed RTT, microseconds (tcp_info_rtt) */
	__u32 rttvar_us;
	__u32 min_rtt_us;
	__u32 total_retrans;
	__u32 snd_cwnd;
	__u32 delivered;
	__u32 snd_mss;
	__u32 rcv_wnd;
	__u32 snd_wnd;
	__u32 reordering;
	/* more tcp_get_info() equivalents, same units as struct tcp_info */
	__u32 snd_ssthresh;
	__u32 rcv_ssthresh;
	__u32 advmss;
	__u32 pmtu;
	__u32 rcv_mss;
	__u32 unacked;          /* packets_out */
	__u32 sacked;
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
	/* the rest of tcp_get_info(), so that a close record from the BPF event carries
	 * what the destroy broadcast would (XTCP2_F_FULLINFO). Not the queues: a socket
	 * reaches TCP_CLOSE (FIN_WAIT2 -> TIME_WAIT) while its owner may still read. */
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
