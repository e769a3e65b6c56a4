// SPDX-License-Identifier: GPL-2.0
/* xtcp2 --mode bpf kernel side.
 *
 * inet_sock_set_state -> one ring buffer event per interesting TCP transition
 * (ESTABLISHED, LISTEN, CLOSE). The CLOSE event carries the final tcp_sock
 * counters (plain loads through the BTF pointer on tp_btf, CO-RE probe reads on the
 * classic tracepoint), so a connection that lived a millisecond still leaves a final
 * record when the sock_diag destroy broadcast is lost.
 * sched_process_fork / syscalls:sys_exit_{unshare,setns} -> an event the first time a
 * network namespace is seen, so the daemon reconciles at once.
 *
 * User space (xtcp2/ebpf/loader.py) loads either the tp_btf program (preferred:
 * real socket cookie) or the classic tracepoint fallback, never both. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "tcp_events.h"
/* the tcp_get_info() port twice: plain loads for tp_btf (xtcp2_ti_*_btf), probe reads
 * for the classic tracepoint */
#define XTCP2_TI_DIRECT
#define XTCP2_TI_SUFFIX _btf
#include "tcp_info.bpf.h"
#undef XTCP2_TI_DIRECT
#undef XTCP2_TI_SUFFIX
#include "tcp_info.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6

/* Read by the loader to check that its numpy dtype matches this layout. */
const volatile __u32 xtcp2_event_size = sizeof(struct xtcp2_event);
/* Never read: carries struct xtcp2_event into the object's BTF (the ring buffer map
 * has no value type), where the contract test compares it with events.EVENT_DTYPE. */
struct xtcp2_event *const volatile xtcp2_event_anchor = 0;

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 << 20); /* resized by the loader before load */
} events SEC(".maps");

/* per-CPU counters, indexed by enum xtcp2_stat (tcp_events.h) */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XTCP2_STAT_MAX);
	__type(key, enum xtcp2_stat);  /* puts the enum in BTF for the contract check */
	__type(value, __u64);
} stats SEC(".maps");

/* What a socket's first state (SYN_SENT / SYN_RECV / ESTABLISHED) leaves for its later
 * events: when, and for an active open the task that called connect(). SYN_SENT is set
 * in connect() itself, in process context; ESTABLISHED of that socket runs in softirq,
 * where the current task is whoever was interrupted. */
struct xtcp2_open {
	__u64 start_ns;
	__u32 tgid;             /* 0: not taken in process context (passive open) */
	__u32 _pad;
	char  comm[16];
};

/* sock pointer -> struct xtcp2_open. An LRU hash, for both state programs: on tp_btf,
 * socket storage (sk_storage) was measured slower (its creation per socket costs more
 * than the LRU update). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct xtcp2_open);
} opened SEC(".maps");

/* net cookies already reported (cookies are never reused, inodes are) */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} netns_seen SEC(".maps");

/* cookies of sockets whose close event is in the ring buffer: their destroy
 * broadcast is a duplicate and xtcp2_destroy_filter drops it in the kernel. A
 * direct-mapped table (slot = cookie's low bits), not a hash: an inlined array store
 * costs a few ns where an LRU hash update cost hundreds. A newer cookie overwriting
 * an older one in its slot, or a slot never cleared (sockets of namespaces nobody
 * subscribed to), only lets a broadcast through, which user space dedupes by cookie. */
#define REPORTED_SLOTS 65536
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, REPORTED_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} reported SEC(".maps");

static __always_inline void count(enum xtcp2_stat idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += 1;
}

static __always_inline struct xtcp2_event *reserve(void)
{
	struct xtcp2_event *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(XTCP2_STAT_RESERVE_FAILED);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	return e;
}

static __always_inline void submit(struct xtcp2_event *e)
{
	bpf_ringbuf_submit(e, 0);
	count(XTCP2_STAT_SUBMITTED);
}

/* The states that get an event (SYN_SENT / SYN_RECV only start the clock). */
static __always_inline int wanted(int newstate)
{
	return newstate == TCP_ESTABLISHED || newstate == TCP_CLOSE || newstate == TCP_LISTEN;
}

static __always_inline struct xtcp2_event *begin(int oldstate, int newstate, __u64 now, __u64 cookie,
						  __u16 cookie_flags)
{
	struct xtcp2_event *e = reserve();

	if (!e)
		return 0;
	e->kind = XTCP2_EV_STATE;
	e->ktime_ns = now;
	e->cookie = cookie;
	e->flags = cookie_flags;
	e->oldstate = oldstate;
	e->newstate = newstate;
	if (newstate == TCP_LISTEN) { /* listen() runs in the owner's context */
		e->pid = bpf_get_current_pid_tgid() >> 32;
		bpf_get_current_comm(e->comm, sizeof(e->comm));
		e->flags |= XTCP2_F_OWNER;
	}
	return e;
}

/* Starts the clock of a socket (and, in connect(), notes its owner); true if the
 * transition needs nothing more (SYN_SENT / SYN_RECV, or a state we do not report). */
static __always_inline int opened_at(int newstate, __u64 key, __u64 now)
{
	struct xtcp2_open o = { .start_ns = now };

	if (newstate == TCP_SYN_SENT || newstate == TCP_SYN_RECV) {
		if (newstate == TCP_SYN_SENT) {
			o.tgid = bpf_get_current_pid_tgid() >> 32;
			bpf_get_current_comm(o.comm, sizeof(o.comm));
		}
		bpf_map_update_elem(&opened, &key, &o, BPF_ANY);
		return 1;
	}
	if (!wanted(newstate))
		return 1;
	return 0;
}

/* Copies a connect()-time owner into the event. */
static __always_inline void owner_from(struct xtcp2_event *e, const struct xtcp2_open *o)
{
	if (o->tgid) {
		e->pid = o->tgid;
		__builtin_memcpy(e->comm, o->comm, sizeof(e->comm));
		e->flags |= XTCP2_F_OWNER;
	}
}

/* ESTABLISHED: the owner noted at SYN_SENT; the clock starts now if no SYN state was seen. */
static __always_inline void established_at(struct xtcp2_event *e, __u64 key, __u64 now)
{
	struct xtcp2_open *o = bpf_map_lookup_elem(&opened, &key);
	struct xtcp2_open fresh = { .start_ns = now };

	if (o) {
		owner_from(e, o);
		return;
	}
	/* an update with BPF_NOEXIST would take an LRU node first, even for a present key */
	bpf_map_update_elem(&opened, &key, &fresh, BPF_NOEXIST);
}

/* The socket's lifetime, and its owner, at TCP_CLOSE. */
static __always_inline void closed_at(struct xtcp2_event *e, __u64 key, __u64 now)
{
	struct xtcp2_open *o = bpf_map_lookup_elem(&opened, &key);

	if (o) {
		e->duration_ns = now - o->start_ns;
		e->flags |= XTCP2_F_DURATION;
		owner_from(e, o);
		bpf_map_delete_elem(&opened, &key);
	}
}

static __always_inline void mark_reported(__u64 cookie)
{
	__u32 slot = cookie & (REPORTED_SLOTS - 1);
	__u64 *v;

	if (!cookie)
		return;
	v = bpf_map_lookup_elem(&reported, &slot);
	if (v)
		*v = cookie;
}

/* ---- tp_btf: the socket is a BTF pointer, every field a plain load ---- */

static __always_inline void head_btf(struct xtcp2_event *e, const struct tcp_sock *tp)
{
	const struct sock_common *skc = &tp->inet_conn.icsk_inet.sk.__sk_common;
	const struct net *net = skc->skc_net.net;

	e->netns_ino = net->ns.inum;
	e->net_cookie = net->net_cookie;
	e->family = skc->skc_family;
	/* inet_sport, not skc_num: inet_put_port() has zeroed skc_num by TCP_CLOSE */
	e->sport = __builtin_bswap16(tp->inet_conn.icsk_inet.inet_sport);
	e->dport = __builtin_bswap16(skc->skc_dport);
	if (e->family == AF_INET6) {
		__builtin_memcpy(e->saddr, &skc->skc_v6_rcv_saddr, 16);
		__builtin_memcpy(e->daddr, &skc->skc_v6_daddr, 16);
	} else {
		*(__u32 *)e->saddr = skc->skc_rcv_saddr;
		*(__u32 *)e->daddr = skc->skc_daddr;
	}
}

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(xtcp2_state_btf, struct sock *sk, const int oldstate, const int newstate)
{
	struct xtcp2_event *e;
	struct tcp_sock *tp;
	__u64 now, cookie;

	if (newstate != TCP_SYN_SENT && newstate != TCP_SYN_RECV && !wanted(newstate))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk); /* NULL unless a full TCP socket: DCCP, SCTP... */
	if (!tp)
		return 0;
	now = bpf_ktime_get_ns();
	if (opened_at(newstate, (__u64)sk, now))
		return 0;
	/* most sockets have one by now (an earlier event, an inet_diag lookup): a plain
	 * load; the helper only to generate it */
	cookie = sk->__sk_common.skc_cookie.counter;
	if (!cookie)
		cookie = bpf_get_socket_cookie(sk);
	e = begin(oldstate, newstate, now, cookie, 0);
	if (!e)
		return 0;
	head_btf(e, tp);
	if (newstate == TCP_ESTABLISHED)
		established_at(e, (__u64)sk, now);
	if (newstate == TCP_CLOSE) {
		closed_at(e, (__u64)sk, now);
		if (oldstate != TCP_LISTEN) {
			xtcp2_ti_counters_btf(&e->ti, tp);
			xtcp2_ti_rest_btf(&e->ti, tp);
			e->flags |= XTCP2_F_COUNTERS | XTCP2_F_FULLINFO;
		}
		mark_reported(cookie);
	}
	submit(e);
	return 0;
}

/* ---- classic tracepoint fallback: a raw pointer, every field a CO-RE probe read ---- */

static __always_inline void head_probed(struct xtcp2_event *e, const struct sock *sk)
{
	struct net *net = BPF_CORE_READ(sk, __sk_common.skc_net.net);

	e->netns_ino = BPF_CORE_READ(net, ns.inum);
	e->net_cookie = BPF_CORE_READ(net, net_cookie);
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sport = __builtin_bswap16(BPF_CORE_READ((const struct inet_sock *)sk, inet_sport));
	e->dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->saddr, sk, __sk_common.skc_v6_rcv_saddr.in6_u.u6_addr8);
		BPF_CORE_READ_INTO(&e->daddr, sk, __sk_common.skc_v6_daddr.in6_u.u6_addr8);
	} else {
		BPF_CORE_READ_INTO((__u32 *)e->saddr, sk, __sk_common.skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, sk, __sk_common.skc_daddr);
	}
}

/* The classic tracepoint gives the sock address only, so the cookie is read from
 * sk->__sk_common.skc_cookie (0 if inet_diag or a cookie helper never generated one yet). */
SEC("tracepoint/sock/inet_sock_set_state")
int xtcp2_state_tp(struct trace_event_raw_inet_sock_set_state *ctx)
{
	const struct sock *sk = ctx->skaddr;
	int oldstate = ctx->oldstate, newstate = ctx->newstate;
	struct xtcp2_event *e;
	__u64 now, cookie;

	if (ctx->protocol != IPPROTO_TCP) /* in the context: no read of the socket */
		return 0;
	now = bpf_ktime_get_ns();
	if (opened_at(newstate, (__u64)sk, now))
		return 0;
	cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	e = begin(oldstate, newstate, now, cookie, cookie ? 0 : XTCP2_F_NOCOOKIE);
	if (!e)
		return 0;
	head_probed(e, sk);
	if (newstate == TCP_ESTABLISHED)
		established_at(e, (__u64)sk, now);
	if (newstate == TCP_CLOSE) {
		closed_at(e, (__u64)sk, now);
		if (oldstate != TCP_LISTEN) {
			xtcp2_ti_counters(&e->ti, (const struct tcp_sock *)sk);
			xtcp2_ti_rest(&e->ti, (const struct tcp_sock *)sk);
			e->flags |= XTCP2_F_COUNTERS | XTCP2_F_FULLINFO;
		}
		mark_reported(cookie);
	}
	submit(e);
	return 0;
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

/* unshare(CLONE_NEWNET) and setns() returned: the task may be in a new network
 * namespace. The per-syscall tracepoints have the same names on every architecture,
 * unlike syscall numbers matched on sys_exit. (fentry on switch_task_namespaces would
 * need no tracefs, but kernel lockdown refuses it on some hosts, this one included.) */
static __always_inline int on_ns_syscall_exit(long ret)
{
	if (ret < 0)
		return 0;
	return report_netns(BPF_CORE_READ(bpf_get_current_task_btf(), nsproxy, net_ns));
}

SEC("tracepoint/syscalls/sys_exit_unshare")
int xtcp2_unshare(struct trace_event_raw_sys_exit *ctx)
{
	return on_ns_syscall_exit(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_setns")
int xtcp2_setns(struct trace_event_raw_sys_exit *ctx)
{
	return on_ns_syscall_exit(ctx->ret);
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
	__u64 cookie = 0, *v;
	__u32 slot;

	if (bpf_skb_load_bytes(skb, 4, &type, sizeof(type)) || type != SOCK_DIAG_BY_FAMILY)
		return skb->len;
	if (bpf_skb_load_bytes(skb, IDIAG_COOKIE_OFF, &cookie, sizeof(cookie)) || !cookie)
		return skb->len;
	slot = cookie & (REPORTED_SLOTS - 1);
	v = bpf_map_lookup_elem(&reported, &slot);
	if (!v || *v != cookie)
		return skb->len;
	*v = 0;
	count(XTCP2_STAT_BROADCAST_FILTERED);
	return 0;
}
