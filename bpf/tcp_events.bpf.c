// SPDX-License-Identifier: GPL-2.0
/* xtcp2 --mode bpf kernel side.
 *
 * inet_sock_set_state -> one ring buffer event per interesting TCP transition
 * (ESTABLISHED, LISTEN, CLOSE). The CLOSE event carries the final tcp_sock
 * counters, read with CO-RE, so a connection that lived a millisecond still
 * leaves a final record when the sock_diag destroy broadcast is lost.
 * sched_process_fork / sys_exit(unshare, setns) -> an event the first time a
 * network namespace is seen, so the daemon reconciles at once.
 *
 * User space (xtcp2/ebpf/loader.py) loads either the tp_btf program (preferred:
 * real socket cookie) or the classic tracepoint fallback, never both. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "xtcp2_events.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define NR_unshare 272 /* x86_64 */
#define NR_setns 308
#define TCPI_OPT_TIMESTAMPS 1
#define TCPI_OPT_SACK 2
#define TCPI_OPT_WSCALE 4
#define TCPI_OPT_ECN 8
#define TCPI_OPT_ECN_SEEN 16
#define TCPI_OPT_SYN_DATA 32
#define TCPI_OPT_USEC_TS 64
#define TCPI_OPT_TFO_CHILD 128
#define TCP_ECN_OK 1
#define TCP_ECN_SEEN 8
#define TCP_ECN_MODE_ACCECN 16  /* 6.18: tcp_ecn_mode_any() */
#define USEC_PER_SEC 1000000ULL

/* libbpf fills this from the kernel config; 0 (weak) if the config is not readable,
 * and then the jiffies-based fields stay 0 rather than being wrong */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* Read by the loader to check that its numpy dtype matches this layout. */
const volatile __u32 xtcp2_event_size = sizeof(struct xtcp2_event);

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by the loader before load */
} events SEC(".maps");

/* [0] ring buffer reservation failures, [1] events submitted,
 * [2] destroy broadcasts dropped by xtcp2_destroy_filter (already reported) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 3);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* sock pointer -> ktime of the first state seen (SYN_SENT / SYN_RECV / ESTABLISHED) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} opened SEC(".maps");

/* net cookies already reported (cookies are never reused, inodes are) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} netns_seen SEC(".maps");

/* cookies of sockets whose close event is in the ring buffer: their destroy
 * broadcast is a duplicate and xtcp2_destroy_filter drops it in the kernel. LRU:
 * sockets of namespaces nobody subscribed to never get a broadcast to clear them. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} reported SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct xtcp2_event *reserve(void)
{
	struct xtcp2_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(0);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	return e;
}

static __always_inline void submit(struct xtcp2_event *e)
{
	bpf_ringbuf_submit(e, 0);
	count(1);
}

static __always_inline void fill_counters(struct xtcp2_event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)sk;

	e->bytes_acked = BPF_CORE_READ(tp, bytes_acked);
	e->bytes_received = BPF_CORE_READ(tp, bytes_received);
	e->bytes_sent = BPF_CORE_READ(tp, bytes_sent);
	e->bytes_retrans = BPF_CORE_READ(tp, bytes_retrans);
	e->segs_in = BPF_CORE_READ(tp, segs_in);
	e->segs_out = BPF_CORE_READ(tp, segs_out);
	e->data_segs_in = BPF_CORE_READ(tp, data_segs_in);
	e->data_segs_out = BPF_CORE_READ(tp, data_segs_out);
	/* same scaling as tcp_get_info(): srtt_us is <<3, mdev_us is <<2 */
	e->srtt_us = BPF_CORE_READ(tp, srtt_us) >> 3;
	e->rttvar_us = BPF_CORE_READ(tp, mdev_us) >> 2;
	e->min_rtt_us = BPF_CORE_READ(tp, rtt_min.s[0].v);
	e->total_retrans = BPF_CORE_READ(tp, total_retrans);
	e->snd_cwnd = BPF_CORE_READ(tp, snd_cwnd);
	e->delivered = BPF_CORE_READ(tp, delivered);
	e->snd_mss = BPF_CORE_READ(tp, mss_cache);
	e->rcv_wnd = BPF_CORE_READ(tp, rcv_wnd);
	e->snd_wnd = BPF_CORE_READ(tp, snd_wnd);
	e->reordering = BPF_CORE_READ(tp, reordering);
	e->snd_ssthresh = BPF_CORE_READ(tp, snd_ssthresh);
	e->rcv_ssthresh = BPF_CORE_READ(tp, rcv_ssthresh);
	e->advmss = BPF_CORE_READ(tp, advmss);
	e->pmtu = BPF_CORE_READ(icsk, icsk_pmtu_cookie);
	e->rcv_mss = BPF_CORE_READ(icsk, icsk_ack.rcv_mss);
	e->unacked = BPF_CORE_READ(tp, packets_out);
	e->sacked = BPF_CORE_READ(tp, sacked_out);
	e->lost = BPF_CORE_READ(tp, lost_out);
	e->retrans = BPF_CORE_READ(tp, retrans_out);
	e->delivered_ce = BPF_CORE_READ(tp, delivered_ce);
	e->dsack_dups = BPF_CORE_READ(tp, dsack_dups);
	e->reord_seen = BPF_CORE_READ(tp, reord_seen);
	e->rcv_ooopack = BPF_CORE_READ(tp, rcv_ooopack);
	if (bpf_core_field_exists(tp->total_rto)) {
		e->total_rto = BPF_CORE_READ(tp, total_rto);
		e->total_rto_recoveries = BPF_CORE_READ(tp, total_rto_recoveries);
		e->total_rto_time = BPF_CORE_READ(tp, total_rto_time);
	}
	e->rcv_space = BPF_CORE_READ(tp, rcvq_space.space);
	e->ca_state = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ca_state);
	e->flags |= XTCP2_F_COUNTERS;
}

/* jiffies -> microseconds, as jiffies_to_usecs() (HZ divides 1,000,000 on every config) */
static __always_inline __u32 j2us(__u32 j)
{
	return CONFIG_HZ ? j * (__u32)(USEC_PER_SEC / CONFIG_HZ) : 0;
}

/* Bitfields are read relative to the outermost struct (tp, rx_opt.x): clang computes
 * the field's byte offset from the root of the access chain, so passing &tp->rx_opt
 * as the base would add rx_opt's offset twice.
 *
 * The remaining tcp_get_info() fields (net/ipv4/tcp.c), same formulas and units: after
 * TCP_CLOSE the connection's counters no longer change, so this equals the destroy
 * broadcast sent later from sk_destruct() (tests/ebpf/test_close_fidelity.py checks
 * every field). */
static __always_inline void fill_info(struct xtcp2_event *e, const struct sock *sk)
{
	const struct tcp_sock *tp = (const struct tcp_sock *)sk;
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)sk;
	__u32 now = (__u32)bpf_jiffies64(), opts = 0, ato, dmax, rate, intv, mss;
	__u32 chrono_start, write_seq, snd_nxt;
	__u64 busy = 0, st;
	__u8 ecn, ctype;
	int i;

	e->pacing_rate = BPF_CORE_READ(sk, sk_pacing_rate);
	e->max_pacing_rate = BPF_CORE_READ(sk, sk_max_pacing_rate);
	e->retransmits = BPF_CORE_READ(icsk, icsk_retransmits);
	e->probes = BPF_CORE_READ(icsk, icsk_probes_out);
	e->backoff = BPF_CORE_READ(icsk, icsk_backoff);

	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.tstamp_ok))
		opts |= TCPI_OPT_TIMESTAMPS;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.sack_ok))
		opts |= TCPI_OPT_SACK;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.wscale_ok)) {
		opts |= TCPI_OPT_WSCALE;
		e->snd_wscale = BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.snd_wscale);
		e->rcv_wscale = BPF_CORE_READ_BITFIELD_PROBED(tp, rx_opt.rcv_wscale);
	}
	ecn = BPF_CORE_READ(tp, ecn_flags);
	if (ecn & (TCP_ECN_OK | TCP_ECN_MODE_ACCECN))
		opts |= TCPI_OPT_ECN;
	if (ecn & TCP_ECN_SEEN)
		opts |= TCPI_OPT_ECN_SEEN;
	if (BPF_CORE_READ_BITFIELD_PROBED(tp, syn_data_acked))
		opts |= TCPI_OPT_SYN_DATA;
	if (bpf_core_field_exists(tp->tcp_usec_ts) && BPF_CORE_READ_BITFIELD_PROBED(tp, tcp_usec_ts))
		opts |= TCPI_OPT_USEC_TS;
	if (bpf_core_field_exists(tp->syn_fastopen_child) && BPF_CORE_READ_BITFIELD_PROBED(tp, syn_fastopen_child))
		opts |= TCPI_OPT_TFO_CHILD;
	e->options = opts;

	e->rto = j2us(BPF_CORE_READ(icsk, icsk_rto));
	ato = BPF_CORE_READ_BITFIELD_PROBED(icsk, icsk_ack.ato);
	if (bpf_core_field_exists(icsk->icsk_delack_max)) {
		dmax = BPF_CORE_READ(icsk, icsk_delack_max);
		if (dmax && ato > dmax)
			ato = dmax;
	}
	e->ato = j2us(ato);
	if (CONFIG_HZ) {
		e->last_data_sent = (now - BPF_CORE_READ(tp, lsndtime)) * (1000 / CONFIG_HZ);
		e->last_data_recv = (now - BPF_CORE_READ(icsk, icsk_ack.lrcvtime)) * (1000 / CONFIG_HZ);
		e->last_ack_recv = (now - BPF_CORE_READ(tp, rcv_tstamp)) * (1000 / CONFIG_HZ);
	}
	e->rcv_rtt = BPF_CORE_READ(tp, rcv_rtt_est.rtt_us) >> 3;

	write_seq = BPF_CORE_READ(tp, write_seq);
	snd_nxt = BPF_CORE_READ(tp, snd_nxt);
	if ((int)(write_seq - snd_nxt) > 0)
		e->notsent_bytes = write_seq - snd_nxt;

	/* tcp_get_info_chrono_stats(): busy, rwnd-limited, sndbuf-limited */
	ctype = BPF_CORE_READ(tp, chrono_type);
	chrono_start = BPF_CORE_READ(tp, chrono_start);
	for (i = 1; i <= 3; i++) {
		st = BPF_CORE_READ(tp, chrono_stat[i - 1]);
		if (i == ctype)
			st += (__u32)(now - chrono_start);
		st = CONFIG_HZ ? st * (USEC_PER_SEC / CONFIG_HZ) : 0;
		busy += st;
		if (i == 2)
			e->rwnd_limited = st;
		else if (i == 3)
			e->sndbuf_limited = st;
	}
	e->busy_time = busy;

	e->delivery_rate_app_limited = BPF_CORE_READ_BITFIELD_PROBED(tp, rate_app_limited) ? 1 : 0;
	rate = BPF_CORE_READ(tp, rate_delivered);
	intv = BPF_CORE_READ(tp, rate_interval_us);
	mss = BPF_CORE_READ(tp, mss_cache);
	if (rate && intv)
		e->delivery_rate = (__u64)rate * mss * USEC_PER_SEC / intv;
	e->fastopen_client_fail = BPF_CORE_READ_BITFIELD_PROBED(tp, fastopen_client_fail);
	if (bpf_core_field_exists(tp->plb_rehash))
		e->rehash = BPF_CORE_READ(tp, plb_rehash);
	if (bpf_core_field_exists(tp->timeout_rehash))
		e->rehash += BPF_CORE_READ(tp, timeout_rehash);
	if (bpf_core_field_exists(tp->rto_stamp)) {
		__u32 stamp = BPF_CORE_READ(tp, rto_stamp);

		if (stamp)
			e->total_rto_time += (__u32)(bpf_ktime_get_ns() / 1000000) - stamp;
	}
	bpf_probe_read_kernel_str(e->ca_name, sizeof(e->ca_name), BPF_CORE_READ(icsk, icsk_ca_ops, name));
	e->flags |= XTCP2_F_FULLINFO;
}

static __always_inline int on_state(const struct sock *sk, int oldstate, int newstate, __u64 cookie,
				    __u16 cookie_flags)
{
	struct xtcp2_event *e;
	__u64 key = (__u64)sk;
	__u64 now, *start;
	struct net *net;

	if (BPF_CORE_READ(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	now = bpf_ktime_get_ns();
	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		bpf_map_update_elem(&opened, &key, &now, BPF_ANY);
		return 0;
	}
	if (newstate != TCP_ESTABLISHED && newstate != TCP_CLOSE && newstate != TCP_LISTEN)
		return 0;
	if (newstate == TCP_ESTABLISHED)
		bpf_map_update_elem(&opened, &key, &now, BPF_NOEXIST);

	e = reserve();
	if (!e)
		return 0;
	e->kind = XTCP2_EV_STATE;
	e->ktime_ns = now;
	e->cookie = cookie;
	e->flags = cookie_flags;
	e->oldstate = oldstate;
	e->newstate = newstate;
	e->pid = bpf_get_current_pid_tgid() >> 32;
	net = BPF_CORE_READ(sk, __sk_common.skc_net.net);
	e->netns_ino = BPF_CORE_READ(net, ns.inum);
	e->net_cookie = BPF_CORE_READ(net, net_cookie);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	/* inet_sport, not skc_num: inet_put_port() has zeroed skc_num by TCP_CLOSE */
	e->sport = __builtin_bswap16(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
	if (newstate == TCP_CLOSE) {
		start = bpf_map_lookup_elem(&opened, &key);
		if (start) {
			e->duration_ns = now - *start;
			e->flags |= XTCP2_F_DURATION;
			bpf_map_delete_elem(&opened, &key);
		}
		if (oldstate != TCP_LISTEN) {
			fill_counters(e, sk);
			fill_info(e, sk);
		}
		if (cookie) {
			__u8 one = 1;

			bpf_map_update_elem(&reported, &cookie, &one, BPF_ANY);
		}
	}
	submit(e);
	return 0;
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(xtcp2_state_btf, const struct sock *sk, const int oldstate, const int newstate)
{
	return on_state(sk, oldstate, newstate, bpf_get_socket_cookie((void *)sk), 0);
}

/* Fallback when tp_btf cannot attach: the classic tracepoint gives the sock
 * address only, so the cookie is read from sk->__sk_common.skc_cookie (0 if inet_diag or
 * a cookie helper never generated one yet). */
SEC("tracepoint/sock/inet_sock_set_state")
int xtcp2_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	const struct sock *sk = ctx->skaddr;
	__u64 cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);

	return on_state(sk, ctx->oldstate, ctx->newstate, cookie, cookie ? 0 : XTCP2_F_NOCOOKIE);
}

static __always_inline int report_netns(struct net *net)
{
	struct xtcp2_event *e;
	__u64 nc;
	__u8 one = 1;

	if (!net)
		return 0;
	nc = BPF_CORE_READ(net, net_cookie);
	if (bpf_map_lookup_elem(&netns_seen, &nc))
		return 0;
	bpf_map_update_elem(&netns_seen, &nc, &one, BPF_ANY);
	e = reserve();
	if (!e)
		return 0;
	e->kind = XTCP2_EV_NETNS;
	e->ktime_ns = bpf_ktime_get_ns();
	e->net_cookie = nc;
	e->netns_ino = BPF_CORE_READ(net, ns.inum);
	e->pid = bpf_get_current_pid_tgid() >> 32;
	submit(e);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(xtcp2_fork, struct task_struct *parent, struct task_struct *child)
{
	struct net *pn = BPF_CORE_READ(parent, nsproxy, net_ns);
	struct net *cn = BPF_CORE_READ(child, nsproxy, net_ns);

	if (pn == cn)
		return 0;
	return report_netns(cn);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(xtcp2_sys_exit, struct pt_regs *regs, long ret)
{
	long id;

	if (ret < 0)
		return 0;
	id = BPF_CORE_READ(regs, orig_ax);
	if (id != NR_unshare && id != NR_setns)
		return 0;
	return report_netns(BPF_CORE_READ(bpf_get_current_task_btf(), nsproxy, net_ns));
}

#define NLMSG_HDRLEN 16
#define SOCK_DIAG_BY_FAMILY 20
#define IDIAG_COOKIE_OFF (NLMSG_HDRLEN + 44) /* inet_diag_msg.id.idiag_cookie */

/* Socket filter on the sock_diag destroy-group sockets (SO_ATTACH_BPF; netlink runs
 * sk_filter() for every broadcast): a broadcast whose socket's close event went into
 * the ring buffer is a duplicate, dropped here instead of costing user space a
 * recv() and a decode. What passes: sockets whose event was lost (ring full) or
 * that never changed state, and anything that is not an inet_diag message. */
SEC("socket")
int xtcp2_destroy_filter(struct __sk_buff *skb)
{
	__u16 type = 0;
	__u64 cookie = 0;

	if (bpf_skb_load_bytes(skb, 4, &type, sizeof(type)) || type != SOCK_DIAG_BY_FAMILY)
		return skb->len;
	if (bpf_skb_load_bytes(skb, IDIAG_COOKIE_OFF, &cookie, sizeof(cookie)) || !cookie)
		return skb->len;
	if (!bpf_map_lookup_elem(&reported, &cookie))
		return skb->len;
	bpf_map_delete_elem(&reported, &cookie);
	count(2);
	return 0;
}
