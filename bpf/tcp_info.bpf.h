/* CO-RE port of the kernel's tcp_get_info() (net/ipv4/tcp.c): same formulas, same
 * units, into struct xtcp2_tcp_info (tcp_info.h). Shared by tcp_events.bpf.c (close
 * events) and tcp_iter.bpf.c (the socket iterator).
 *
 * How a field is loaded is up to the including program: by default CO-RE probe
 * reads, which work on any kernel pointer (the classic tracepoint's); a program that
 * holds a BTF pointer from bpf_skc_to_tcp_sock() defines XTCP2_TI_DIRECT first and
 * gets plain loads, several times cheaper (the verifier checks each one).
 *
 * The port below the shared part may be included once per access kind: a program
 * that needs both (tcp_events.bpf.c: tp_btf and its classic-tracepoint fallback)
 * includes it twice and names one set of functions with XTCP2_TI_SUFFIX
 * (xtcp2_ti_rest -> xtcp2_ti_rest<suffix>).
 *
 * Bitfields are read relative to the outermost struct (tp, rx_opt.x): clang computes
 * the field's byte offset from the root of the access chain, so passing &tp->rx_opt
 * as the base would add rx_opt's offset twice. */
#ifndef XTCP2_TCP_INFO_BPF_H
#define XTCP2_TCP_INFO_BPF_H

#include "tcp_info.h"

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

#define XTCP2_TI_CAT_(a, b) a##b
#define XTCP2_TI_CAT(a, b) XTCP2_TI_CAT_(a, b)

/* libbpf fills this from the kernel config; 0 (weak) if the config is not readable,
 * and then the jiffies-based fields stay 0 rather than being wrong */
extern unsigned int CONFIG_HZ __kconfig __weak;

/* jiffies -> microseconds, as jiffies_to_usecs() (HZ divides 1,000,000 on every config) */
static __always_inline __u32 xtcp2_j2us(__u32 j)
{
	return CONFIG_HZ ? j * (__u32)(USEC_PER_SEC / CONFIG_HZ) : 0;
}

/* jiffies -> milliseconds, as jiffies_to_msecs() */
static __always_inline __u32 xtcp2_j2ms(__u32 j)
{
	return CONFIG_HZ ? j * (1000 / CONFIG_HZ) : 0;
}

/* One term of tcp_get_info_chrono_stats(): time spent in chrono type i, in usec. */
static __always_inline __u64 xtcp2_chrono(__u64 st, int i, __u8 ctype, __u32 now, __u32 start)
{
	if (i == ctype)
		st += (__u32)(now - start);
	return CONFIG_HZ ? st * (USEC_PER_SEC / CONFIG_HZ) : 0;
}

#endif /* XTCP2_TCP_INFO_BPF_H */

/* ---- the port: once per access kind ---- */
#undef TI_RD
#undef TI_BF
#undef TI_FN
#ifdef XTCP2_TI_DIRECT
#define TI_RD(p, f) ((p)->f)
#define TI_BF(p, f) BPF_CORE_READ_BITFIELD(p, f)
#else
#define TI_RD(p, f) BPF_CORE_READ(p, f)
#define TI_BF(p, f) BPF_CORE_READ_BITFIELD_PROBED(p, f)
#endif
#ifdef XTCP2_TI_SUFFIX
#define TI_FN(name) XTCP2_TI_CAT(name, XTCP2_TI_SUFFIX)
#else
#define TI_FN(name) name
#endif

/* The fields tcp_get_info() reports for every state, listeners included. */
static __always_inline void TI_FN(xtcp2_ti_common)(struct xtcp2_tcp_info *ti, const struct tcp_sock *tp)
{
	const struct sock *sk = (const struct sock *)tp;

	ti->pacing_rate = TI_RD(sk, sk_pacing_rate);
	ti->max_pacing_rate = TI_RD(sk, sk_max_pacing_rate);
	ti->reordering = TI_RD(tp, reordering);
	ti->snd_cwnd = TI_RD(tp, snd_cwnd);
}

/* tcp_get_info() on a listener: the rest is 0 but the accept queue, aliased. */
static __always_inline void TI_FN(xtcp2_ti_listen)(struct xtcp2_tcp_info *ti, const struct tcp_sock *tp)
{
	const struct sock *sk = (const struct sock *)tp;

	TI_FN(xtcp2_ti_common)(ti, tp);
	ti->unacked = TI_RD(sk, sk_ack_backlog);
	ti->sacked = TI_RD(sk, sk_max_ack_backlog);
}

/* Counters and window state of a connection (not a listener). */
static __always_inline void TI_FN(xtcp2_ti_counters)(struct xtcp2_tcp_info *ti, const struct tcp_sock *tp)
{
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)tp;

	ti->bytes_acked = TI_RD(tp, bytes_acked);
	ti->bytes_received = TI_RD(tp, bytes_received);
	ti->bytes_sent = TI_RD(tp, bytes_sent);
	ti->bytes_retrans = TI_RD(tp, bytes_retrans);
	ti->segs_in = TI_RD(tp, segs_in);
	ti->segs_out = TI_RD(tp, segs_out);
	ti->data_segs_in = TI_RD(tp, data_segs_in);
	ti->data_segs_out = TI_RD(tp, data_segs_out);
	/* same scaling as tcp_get_info(): srtt_us is <<3, mdev_us is <<2 */
	ti->srtt_us = TI_RD(tp, srtt_us) >> 3;
	ti->rttvar_us = TI_RD(tp, mdev_us) >> 2;
	ti->min_rtt_us = TI_RD(tp, rtt_min.s[0].v);
	ti->total_retrans = TI_RD(tp, total_retrans);
	ti->snd_cwnd = TI_RD(tp, snd_cwnd);
	ti->delivered = TI_RD(tp, delivered);
	ti->snd_mss = TI_RD(tp, mss_cache);
	ti->rcv_wnd = TI_RD(tp, rcv_wnd);
	ti->snd_wnd = TI_RD(tp, snd_wnd);
	ti->reordering = TI_RD(tp, reordering);
	ti->snd_ssthresh = TI_RD(tp, snd_ssthresh);
	ti->rcv_ssthresh = TI_RD(tp, rcv_ssthresh);
	ti->advmss = TI_RD(tp, advmss);
	ti->pmtu = TI_RD(icsk, icsk_pmtu_cookie);
	ti->rcv_mss = TI_RD(icsk, icsk_ack.rcv_mss);
	ti->unacked = TI_RD(tp, packets_out);
	ti->sacked = TI_RD(tp, sacked_out);
	ti->lost = TI_RD(tp, lost_out);
	ti->retrans = TI_RD(tp, retrans_out);
	ti->delivered_ce = TI_RD(tp, delivered_ce);
	ti->dsack_dups = TI_RD(tp, dsack_dups);
	ti->reord_seen = TI_RD(tp, reord_seen);
	ti->rcv_ooopack = TI_RD(tp, rcv_ooopack);
	if (bpf_core_field_exists(tp->total_rto)) {
		ti->total_rto = TI_RD(tp, total_rto);
		ti->total_rto_recoveries = TI_RD(tp, total_rto_recoveries);
		ti->total_rto_time = TI_RD(tp, total_rto_time);
	}
	ti->rcv_space = TI_RD(tp, rcvq_space.space);
	ti->ca_state = TI_BF(icsk, icsk_ca_state);
}

/* The congestion control algorithm's name (INET_DIAG_CONG). TCP_CA_NAME_MAX is 16;
 * with direct loads the name is copied as two words (the kernel's names are NUL
 * padded), a helper call otherwise. */
static __always_inline void TI_FN(xtcp2_ti_ca_name)(struct xtcp2_tcp_info *ti, const struct tcp_sock *tp)
{
	const struct tcp_congestion_ops *ops = TI_RD(&tp->inet_conn, icsk_ca_ops);

	if (!ops)
		return;
#ifdef XTCP2_TI_DIRECT
	((__u64 *)ti->ca_name)[0] = ((const __u64 *)ops->name)[0];
	((__u64 *)ti->ca_name)[1] = ((const __u64 *)ops->name)[1];
	ti->ca_name[15] = 0;
#else
	bpf_probe_read_kernel_str(ti->ca_name, sizeof(ti->ca_name), &ops->name);
#endif
}

/* The rest of tcp_get_info() for a connection, and the congestion control name. */
static __always_inline void TI_FN(xtcp2_ti_rest)(struct xtcp2_tcp_info *ti, const struct tcp_sock *tp)
{
	const struct sock *sk = (const struct sock *)tp;
	const struct inet_connection_sock *icsk = (const struct inet_connection_sock *)tp;
	__u32 now = (__u32)bpf_jiffies64(), opts = 0, ato, dmax, rate, intv, mss;
	__u32 chrono_start, write_seq, snd_nxt;
	__u64 s1, s2, s3;
	__u8 ecn, ctype;

	ti->pacing_rate = TI_RD(sk, sk_pacing_rate);
	ti->max_pacing_rate = TI_RD(sk, sk_max_pacing_rate);
	ti->retransmits = TI_RD(icsk, icsk_retransmits);
	ti->probes = TI_RD(icsk, icsk_probes_out);
	ti->backoff = TI_RD(icsk, icsk_backoff);

	if (TI_BF(tp, rx_opt.tstamp_ok))
		opts |= TCPI_OPT_TIMESTAMPS;
	if (TI_BF(tp, rx_opt.sack_ok))
		opts |= TCPI_OPT_SACK;
	if (TI_BF(tp, rx_opt.wscale_ok)) {
		opts |= TCPI_OPT_WSCALE;
		ti->snd_wscale = TI_BF(tp, rx_opt.snd_wscale);
		ti->rcv_wscale = TI_BF(tp, rx_opt.rcv_wscale);
	}
	ecn = TI_RD(tp, ecn_flags);
	if (ecn & (TCP_ECN_OK | TCP_ECN_MODE_ACCECN))
		opts |= TCPI_OPT_ECN;
	if (ecn & TCP_ECN_SEEN)
		opts |= TCPI_OPT_ECN_SEEN;
	if (TI_BF(tp, syn_data_acked))
		opts |= TCPI_OPT_SYN_DATA;
	if (bpf_core_field_exists(tp->tcp_usec_ts) && TI_BF(tp, tcp_usec_ts))
		opts |= TCPI_OPT_USEC_TS;
	if (bpf_core_field_exists(tp->syn_fastopen_child) && TI_BF(tp, syn_fastopen_child))
		opts |= TCPI_OPT_TFO_CHILD;
	ti->options = opts;

	ti->rto = xtcp2_j2us(TI_RD(icsk, icsk_rto));
	ato = TI_BF(icsk, icsk_ack.ato);
	if (bpf_core_field_exists(icsk->icsk_delack_max)) {
		dmax = TI_RD(icsk, icsk_delack_max);
		if (dmax && ato > dmax)
			ato = dmax;
	}
	ti->ato = xtcp2_j2us(ato);
	ti->last_data_sent = xtcp2_j2ms(now - TI_RD(tp, lsndtime));
	ti->last_data_recv = xtcp2_j2ms(now - TI_RD(icsk, icsk_ack.lrcvtime));
	ti->last_ack_recv = xtcp2_j2ms(now - TI_RD(tp, rcv_tstamp));
	ti->rcv_rtt = TI_RD(tp, rcv_rtt_est.rtt_us) >> 3;

	write_seq = TI_RD(tp, write_seq);
	snd_nxt = TI_RD(tp, snd_nxt);
	if ((int)(write_seq - snd_nxt) > 0)
		ti->notsent_bytes = write_seq - snd_nxt;

	/* tcp_get_info_chrono_stats(): busy, rwnd-limited, sndbuf-limited (constant
	 * indices: a variable offset into a BTF pointer would not verify) */
	ctype = TI_BF(tp, chrono_type); /* a 2-bit field on 6.1, a whole u8 on 6.18 */
	chrono_start = TI_RD(tp, chrono_start);
	s1 = xtcp2_chrono(TI_RD(tp, chrono_stat[0]), 1, ctype, now, chrono_start);
	s2 = xtcp2_chrono(TI_RD(tp, chrono_stat[1]), 2, ctype, now, chrono_start);
	s3 = xtcp2_chrono(TI_RD(tp, chrono_stat[2]), 3, ctype, now, chrono_start);
	ti->busy_time = s1 + s2 + s3;
	ti->rwnd_limited = s2;
	ti->sndbuf_limited = s3;

	ti->delivery_rate_app_limited = TI_BF(tp, rate_app_limited) ? 1 : 0;
	rate = TI_RD(tp, rate_delivered);
	intv = TI_RD(tp, rate_interval_us);
	mss = TI_RD(tp, mss_cache);
	if (rate && intv)
		ti->delivery_rate = (__u64)rate * mss * USEC_PER_SEC / intv;
	ti->fastopen_client_fail = TI_BF(tp, fastopen_client_fail);
	if (bpf_core_field_exists(tp->plb_rehash))
		ti->rehash = TI_RD(tp, plb_rehash);
	if (bpf_core_field_exists(tp->timeout_rehash))
		ti->rehash += TI_RD(tp, timeout_rehash);
	if (bpf_core_field_exists(tp->rto_stamp)) {
		__u32 stamp = TI_RD(tp, rto_stamp);

		if (stamp)
			ti->total_rto_time += (__u32)(bpf_ktime_get_ns() / 1000000) - stamp;
	}
	TI_FN(xtcp2_ti_ca_name)(ti, tp);
}
