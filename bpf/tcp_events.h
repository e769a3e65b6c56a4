/* Ring buffer event layout of tcp_events.bpf.c. Python mirror: EVENT_DTYPE in
 * xtcp2/ebpf/tcp_events.py, checked field by field against the object's BTF
 * (xtcp2/ebpf/btf_check.py, tests/unit/test_bpf_contract.py) and by size at load
 * (the .rodata constant xtcp2_event_size).
 * Fixed-size, naturally aligned, no implicit padding. */
#ifndef XTCP2_EVENTS_H
#define XTCP2_EVENTS_H

#include "tcp_info.h"

#define XTCP2_EV_STATE 1   /* TCP state change (ESTABLISHED, LISTEN, CLOSE) */
#define XTCP2_EV_NETNS 2   /* a task entered a network namespace not seen before */

/* flags */
#define XTCP2_F_COUNTERS 1 /* final counters below are valid (newstate == CLOSE) */
#define XTCP2_F_NOCOOKIE 2 /* classic tracepoint and the socket never got a cookie */
#define XTCP2_F_DURATION 4 /* duration_ns is valid (the open was seen) */
#define XTCP2_F_FULLINFO 8 /* every tcp_info field below is valid too */
#define XTCP2_F_OWNER 16   /* pid and comm name the socket's owner: the task that called
                            * connect() (taken at SYN_SENT) or listen() */

/* indices of the per-CPU `stats` array map; Python mirror: events.Stat */
enum xtcp2_stat {
	XTCP2_STAT_RESERVE_FAILED = 0,   /* ring buffer full: event lost */
	XTCP2_STAT_SUBMITTED = 1,        /* events submitted */
	XTCP2_STAT_BROADCAST_FILTERED = 2, /* destroy broadcasts dropped by xtcp2_destroy_filter */
	XTCP2_STAT_MAX,
};

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
	__u32 pid;              /* with XTCP2_F_OWNER: the owner's tgid (state events); the
				 * current task's (namespace events) */
	__u32 _pad0;
	char  comm[16];         /* with XTCP2_F_OWNER: the owner's task name */
	__u64 duration_ns;      /* since SYN_SENT/SYN_RECV/ESTABLISHED, with XTCP2_F_DURATION */
	/* at TCP_CLOSE (XTCP2_F_COUNTERS / XTCP2_F_FULLINFO): what tcp_get_info() would say.
	 * Not the queues: a socket reaches TCP_CLOSE (FIN_WAIT2 -> TIME_WAIT) while its
	 * owner may still read. */
	struct xtcp2_tcp_info ti;
};

#endif
