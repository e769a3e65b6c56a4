/* Record layout of the TCP socket iterator (tcp_iter.bpf.c): one per socket, written
 * with bpf_seq_write. Python mirror: ITER_DTYPE in xtcp2/ebpf/tcp_iter.py, checked
 * field by field against the object's BTF (tests/unit/test_bpf_contract.py) and by
 * size at load (the .rodata constant xtcp2_iter_rec_size).
 *
 * The first part is struct inet_diag_msg as inet_diag fills it (ports and addresses
 * in network order), then what inet_diag sends as attributes. TIME_WAIT and request
 * (SYN_RECV) sockets carry the message part only, as in inet_diag.
 * Fixed-size, naturally aligned, no implicit padding. Only what a record exports:
 * every byte is written to the seq buffer and copied to user space again. */
#ifndef XTCP2_TCP_ITER_H
#define XTCP2_TCP_ITER_H

#include "tcp_info.h"

/* kind: which kernel object the iterator handed us */
enum xtcp2_iter_kind {
	XTCP2_IT_FULL = 1,      /* struct tcp_sock: every field */
	XTCP2_IT_TIMEWAIT = 2,  /* struct inet_timewait_sock: message part only */
	XTCP2_IT_REQUEST = 3,   /* struct request_sock (SYN_RECV): message part only */
};

/* cc_kind: what cc_info holds (inet_diag's INET_DIAG_{BBR,DCTCP,VEGAS}INFO) */
enum xtcp2_iter_cc {
	XTCP2_CC_NONE = 0,
	XTCP2_CC_BBR = 1,       /* struct tcp_bbr_info: bw_lo, bw_hi, min_rtt, pacing_gain, cwnd_gain */
	XTCP2_CC_DCTCP = 2,     /* struct tcp_dctcp_info */
	XTCP2_CC_VEGAS = 3,     /* struct tcpvegas_info */
};

struct xtcp2_iter_rec {
	__u64 cookie;           /* == idiag_cookie */
	__u64 cgroup_id;        /* INET_DIAG_CGROUP_ID */
	/* struct inet_diag_msg */
	__u8  family;
	__u8  state;
	__u8  timer;
	__u8  retrans;
	__u16 sport;            /* network order */
	__u16 dport;            /* network order */
	__u8  saddr[16];        /* 4 bytes used for AF_INET */
	__u8  daddr[16];
	__u32 ifindex;
	__u32 expires;          /* milliseconds */
	__u32 rqueue;
	__u32 wqueue;
	__u32 uid;
	__u32 inode;
	/* identity and attributes */
	__u32 netns_ino;
	__u8  kind;             /* enum xtcp2_iter_kind */
	__u8  cc_kind;          /* enum xtcp2_iter_cc */
	__u8  shutdown;         /* INET_DIAG_SHUTDOWN */
	__u8  tos;              /* INET_DIAG_TOS */
	__u8  tclass;           /* INET_DIAG_TCLASS (AF_INET6) */
	__u8  _pad0;
	__u16 sockopt;          /* INET_DIAG_SOCKOPT bits (inet_flags on 6.6+, bitfields before) */
	__u32 class_id;         /* INET_DIAG_CLASS_ID */
	/* INET_DIAG_SKMEMINFO, SK_MEMINFO_* order. INET_DIAG_MEMINFO is four of these
	 * (rmem = [0], wmem = [5] queued, fmem = [4], tmem = [2]): user space copies them */
	__u32 skmeminfo[9];
	__u32 cc_info[5];       /* see cc_kind */
	struct xtcp2_tcp_info ti; /* INET_DIAG_INFO and INET_DIAG_CONG (ti.ca_name) */
};

#endif
