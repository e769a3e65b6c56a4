// SPDX-License-Identifier: GPL-2.0
/* xtcp2 -collector iter: a TCP socket iterator (SEC("iter/tcp"), kernel 5.9+).
 *
 * Reading the iterator from inside a network namespace (the seq file belongs to the
 * namespace of the task that creates it) visits that namespace's sockets; this
 * program writes one struct xtcp2_iter_rec (tcp_iter.h) per socket with
 * bpf_seq_write: what an inet_diag dump with every extension would say, built the
 * way inet_diag builds it (net/ipv4/inet_diag.c, tcp_diag.c), with tcp_get_info()
 * through the shared CO-RE port (tcp_info.bpf.h). The iterator holds the socket
 * lock of a full socket while this runs, as tcp_get_info() does.
 *
 * TIME_WAIT and request sockets get the message part only, as inet_diag sends them.
 * Full sockets are read through bpf_skc_to_tcp_sock(): plain loads checked by the
 * verifier, no probe read per field. */
#define XTCP2_TI_DIRECT
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "tcp_iter.h"
#include "tcp_info.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET6 10
#define ICSK_TIME_RETRANS 1
#define ICSK_TIME_PROBE0 3
#define ICSK_TIME_LOSS_PROBE 5
#define ICSK_TIME_REO_TIMEOUT 6
#define BW_SCALE 24

/* Read by the loader to check that its numpy dtype matches this layout. */
const volatile __u32 xtcp2_iter_rec_size = sizeof(struct xtcp2_iter_rec);
/* Never read by the program: they carry the two enums into the object's BTF, where
 * the contract test compares them with xtcp2/ebpf/tcp_iter.py. */
const volatile enum xtcp2_iter_kind xtcp2_iter_kind_anchor = XTCP2_IT_FULL;
const volatile enum xtcp2_iter_cc xtcp2_iter_cc_anchor = XTCP2_CC_NONE;

/* The record (416 bytes) and the port's locals do not fit the 512-byte stack. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xtcp2_iter_rec);
} scratch SEC(".maps");

/* kernels before 6.14 keep the retransmit timer's deadline in its own field */
struct inet_connection_sock___old {
	unsigned long icsk_timeout;
} __attribute__((preserve_access_index));

/* jiffies_delta_to_msecs(): a deadline already passed reads 0 */
static __always_inline __u32 expires_ms(unsigned long deadline)
{
	long d = (long)(deadline - (unsigned long)bpf_jiffies64());

	return d > 0 ? xtcp2_j2ms((__u32)d) : 0;
}

/* inet_sk_diag_fill(): which timer is pending, its retransmit count and deadline */
static __always_inline void fill_timer(struct xtcp2_iter_rec *r, const struct tcp_sock *tp)
{
	const struct inet_connection_sock *icsk = &tp->inet_conn;
	const struct sock *sk = (const struct sock *)tp;
	unsigned long deadline;
	__u8 pending = icsk->icsk_pending;

	if (bpf_core_field_exists(((struct inet_connection_sock___old *)icsk)->icsk_timeout))
		deadline = ((struct inet_connection_sock___old *)icsk)->icsk_timeout;
	else
		deadline = icsk->icsk_retransmit_timer.expires;
	if (pending == ICSK_TIME_RETRANS || pending == ICSK_TIME_REO_TIMEOUT || pending == ICSK_TIME_LOSS_PROBE) {
		r->timer = 1;
		r->retrans = icsk->icsk_retransmits;
		r->expires = expires_ms(deadline);
	} else if (pending == ICSK_TIME_PROBE0) {
		r->timer = 4;
		r->retrans = icsk->icsk_probes_out;
		r->expires = expires_ms(deadline);
	} else if (sk->sk_timer.entry.pprev) { /* timer_pending(&sk->sk_timer): keepalive */
		r->timer = 2;
		r->retrans = icsk->icsk_probes_out;
		r->expires = expires_ms(sk->sk_timer.expires);
	}
}

/* before 6.6 the options inet_diag reports were bitfields of inet_sock */
struct inet_sock___bits {
	__u8 recverr: 1, is_icsk: 1, freebind: 1, hdrincl: 1, mc_loop: 1, transparent: 1, mc_all: 1, nodefrag: 1;
	__u8 bind_address_no_port: 1, recverr_rfc4884: 1, defer_connect: 1;
} __attribute__((preserve_access_index));

/* inet_diag_msg_sockopt_fill() of kernels before 6.6: struct inet_diag_sockopt's bits */
static __always_inline __u16 sockopt_bits(const struct inet_sock *inet)
{
	const struct inet_sock___bits *b = (const void *)inet;
	__u16 o = 0;

	o |= BPF_CORE_READ_BITFIELD(b, recverr) << 0;
	o |= BPF_CORE_READ_BITFIELD(b, is_icsk) << 1;
	o |= BPF_CORE_READ_BITFIELD(b, freebind) << 2;
	o |= BPF_CORE_READ_BITFIELD(b, hdrincl) << 3;
	o |= BPF_CORE_READ_BITFIELD(b, mc_loop) << 4;
	o |= BPF_CORE_READ_BITFIELD(b, transparent) << 5;
	o |= BPF_CORE_READ_BITFIELD(b, mc_all) << 6;
	o |= BPF_CORE_READ_BITFIELD(b, nodefrag) << 7;
	o |= BPF_CORE_READ_BITFIELD(b, bind_address_no_port) << 8;
	o |= BPF_CORE_READ_BITFIELD(b, recverr_rfc4884) << 9;
	o |= BPF_CORE_READ_BITFIELD(b, defer_connect) << 10;
	return o;
}

/* inet_diag_msg_attrs_fill(): uid, inode, shutdown, tos, tclass, class id, cgroup, sockopt */
static __always_inline void fill_attrs(struct xtcp2_iter_rec *r, const struct tcp_sock *tp, __u32 uid)
{
	const struct sock *sk = (const struct sock *)tp;
	const struct inet_sock *inet = &tp->inet_conn.icsk_inet;
	struct socket *sock;
	struct cgroup *cg;
	__u32 classid = 0;

	r->uid = uid;
	if (bpf_core_field_exists(sk->sk_ino)) {
		r->inode = sk->sk_ino;
	} else {
		sock = sk->sk_socket;
		if (sock)
			r->inode = BPF_CORE_READ((struct socket_alloc *)sock, vfs_inode.i_ino);
	}
	r->shutdown = sk->sk_shutdown;
	r->tos = inet->tos;
	if (r->family == AF_INET6) {
		struct ipv6_pinfo *np = inet->pinet6;

		if (np)
			r->tclass = np->tclass;
	}
	if (bpf_core_field_exists(sk->sk_cgrp_data.classid))
		classid = sk->sk_cgrp_data.classid;
	r->class_id = classid ? classid : sk->sk_priority;
	cg = sk->sk_cgrp_data.cgroup;
	if (cg && cg->kn)
		r->cgroup_id = cg->kn->id;
	if (bpf_core_field_exists(inet->inet_flags)) {
		/* struct inet_diag_sockopt bits from enum INET_FLAGS_* (6.6+) */
		unsigned long f = inet->inet_flags;
		__u16 o = 0;

		o |= ((f >> 9) & 1) << 0;   /* RECVERR */
		o |= ((f >> 16) & 1) << 1;  /* IS_ICSK */
		o |= ((f >> 11) & 1) << 2;  /* FREEBIND */
		o |= ((f >> 12) & 1) << 3;  /* HDRINCL */
		o |= ((f >> 13) & 1) << 4;  /* MC_LOOP */
		o |= ((f >> 15) & 1) << 5;  /* TRANSPARENT */
		o |= ((f >> 14) & 1) << 6;  /* MC_ALL */
		o |= ((f >> 17) & 1) << 7;  /* NODEFRAG */
		o |= ((f >> 18) & 1) << 8;  /* BIND_ADDRESS_NO_PORT */
		o |= ((f >> 10) & 1) << 9;  /* RECVERR_RFC4884 */
		o |= ((f >> 19) & 1) << 10; /* DEFER_CONNECT */
		r->sockopt = o;
	} else if (bpf_core_field_exists(((struct inet_sock___bits *)inet)->mc_loop)) {
		r->sockopt = sockopt_bits(inet);
	}
}

/* sk_get_meminfo() (INET_DIAG_SKMEMINFO; INET_DIAG_MEMINFO repeats four of them) */
static __always_inline void fill_mem(struct xtcp2_iter_rec *r, const struct tcp_sock *tp)
{
	const struct sock *sk = (const struct sock *)tp;
	__u32 rmem = sk->sk_backlog.rmem_alloc.counter;
	__u32 tmem = sk->sk_wmem_alloc.refs.counter - 1;
	__u32 drops = 0;

	r->skmeminfo[0] = rmem;
	r->skmeminfo[1] = sk->sk_rcvbuf;
	r->skmeminfo[2] = tmem;
	r->skmeminfo[3] = sk->sk_sndbuf;
	r->skmeminfo[4] = sk->sk_forward_alloc;
	r->skmeminfo[5] = sk->sk_wmem_queued;
	r->skmeminfo[6] = sk->sk_omem_alloc.counter;
	r->skmeminfo[7] = sk->sk_backlog.len;
	/* sk_drops_read(): per-NUMA counters when the socket has them (6.18) */
	if (bpf_core_field_exists(sk->sk_drop_counters) && sk->sk_drop_counters)
		drops = BPF_CORE_READ(sk, sk_drop_counters, drops0.counter) +
			BPF_CORE_READ(sk, sk_drop_counters, drops1.counter);
	else
		drops = sk->sk_drops.counter;
	r->skmeminfo[8] = drops;
}

/* bbr_get_info() (net/ipv4/tcp_bbr.c). struct bbr lives in icsk_ca_priv and is not
 * in BTF: its layout (stable since 4.9) is spelled out as u64 words here.
 *   0: min_rtt_us   16: bw.s[0].v   56: bit 31 lt_use_bw   60: lt_bw
 *   76: pacing_gain:10, cwnd_gain:10 */
static __always_inline void fill_bbr(struct xtcp2_iter_rec *r, const struct tcp_sock *tp)
{
	const struct inet_connection_sock *icsk = &tp->inet_conn;
	__u64 w0 = icsk->icsk_ca_priv[0], w2 = icsk->icsk_ca_priv[2];
	__u64 w7 = icsk->icsk_ca_priv[7], w9 = icsk->icsk_ca_priv[9];
	__u64 bw = ((w7 >> 31) & 1) ? (w7 >> 32) : (__u32)w2;
	__u32 gains = w9 >> 32;

	bw = bw * tp->mss_cache * USEC_PER_SEC >> BW_SCALE;
	r->cc_kind = XTCP2_CC_BBR;
	r->cc_info[0] = (__u32)bw;
	r->cc_info[1] = (__u32)(bw >> 32);
	r->cc_info[2] = (__u32)w0;
	r->cc_info[3] = gains & 0x3ff;
	r->cc_info[4] = (gains >> 10) & 0x3ff;
}

static __always_inline void fill_full(struct xtcp2_iter_rec *r, const struct tcp_sock *tp, __u32 uid)
{
	const struct sock *sk = (const struct sock *)tp;
	__u8 state = r->state;

	r->kind = XTCP2_IT_FULL;
	fill_attrs(r, tp, uid);
	fill_mem(r, tp);
	fill_timer(r, tp);
	if (state == TCP_LISTEN) {
		r->rqueue = sk->sk_ack_backlog;
		r->wqueue = sk->sk_max_ack_backlog;
		xtcp2_ti_listen(&r->ti, tp);
		xtcp2_ti_ca_name(&r->ti, tp);
		return;
	}
	r->rqueue = (int)(tp->rcv_nxt - tp->copied_seq) > 0 ? tp->rcv_nxt - tp->copied_seq : 0;
	r->wqueue = tp->write_seq - tp->snd_una;
	xtcp2_ti_counters(&r->ti, tp);
	xtcp2_ti_rest(&r->ti, tp);
	/* congestion control info is sent below TIME_WAIT only (inet_sk_diag_fill) */
	if (state < TCP_TIME_WAIT && r->ti.ca_name[0] == 'b' && r->ti.ca_name[1] == 'b' &&
	    r->ti.ca_name[2] == 'r' && r->ti.ca_name[3] == 0)
		fill_bbr(r, tp);
}

SEC("iter/tcp")
int xtcp2_tcp_iter(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct seq_file *seq = ctx->meta->seq;
	struct xtcp2_iter_rec *r;
	struct tcp_timewait_sock *tw;
	struct tcp_request_sock *req;
	struct tcp_sock *tp;
	__u32 zero = 0;
	__u8 state;

	if (!skc)
		return 0;
	r = bpf_map_lookup_elem(&scratch, &zero);
	if (!r)
		return 0;
	__builtin_memset(r, 0, sizeof(*r));

	/* inet_diag_msg_common_fill() */
	r->family = skc->skc_family;
	r->sport = bpf_htons(skc->skc_num);
	r->dport = skc->skc_dport;
	r->ifindex = skc->skc_bound_dev_if;
	r->cookie = bpf_get_socket_cookie(skc);
	r->netns_ino = skc->skc_net.net->ns.inum;
	if (r->family == AF_INET6) {
		/* plain loads from the BTF pointer, two u64 per address */
		((__u64 *)r->saddr)[0] = ((const __u64 *)skc->skc_v6_rcv_saddr.in6_u.u6_addr32)[0];
		((__u64 *)r->saddr)[1] = ((const __u64 *)skc->skc_v6_rcv_saddr.in6_u.u6_addr32)[1];
		((__u64 *)r->daddr)[0] = ((const __u64 *)skc->skc_v6_daddr.in6_u.u6_addr32)[0];
		((__u64 *)r->daddr)[1] = ((const __u64 *)skc->skc_v6_daddr.in6_u.u6_addr32)[1];
	} else {
		*(__u32 *)r->saddr = skc->skc_rcv_saddr;
		*(__u32 *)r->daddr = skc->skc_daddr;
	}
	state = skc->skc_state;
	r->state = state;

	if (state == TCP_TIME_WAIT) {
		/* inet_twsk_diag_fill() */
		tw = bpf_skc_to_tcp_timewait_sock(skc);
		if (!tw)
			return 0;
		r->kind = XTCP2_IT_TIMEWAIT;
		r->state = tw->tw_sk.tw_substate;
		r->timer = 3;
		r->expires = expires_ms(tw->tw_sk.tw_timer.expires);
	} else if (state == TCP_NEW_SYN_RECV) {
		/* inet_req_diag_fill() */
		req = bpf_skc_to_tcp_request_sock(skc);
		if (!req)
			return 0;
		r->kind = XTCP2_IT_REQUEST;
		r->state = TCP_SYN_RECV;
		r->timer = 1;
		r->retrans = req->req.req.num_retrans;
		r->expires = expires_ms(req->req.req.rsk_timer.expires);
	} else {
		tp = bpf_skc_to_tcp_sock(skc);
		if (!tp)
			return 0;
		fill_full(r, tp, ctx->uid);
	}
	bpf_seq_write(seq, r, sizeof(*r));
	return 0;
}
