"""Prometheus metrics of the collection pipeline.

Defined once at import on prometheus_client's default registry. Names carry the
xtcp2_ prefix and their unit. Per-namespace labels are deliberately absent: a host
with thousands of namespaces must not produce thousands of series. Feature modules
(grpc, bpf, destinations) define their own metrics next to their code, same rules.
"""
from .prom_light import Counter, Gauge, Histogram

# defined next to the low-layer code that counts them (it must not import this module)
from .netlink.decode import DECODE_ERRORS  # noqa: F401
from .netns.registry import NAMESPACE_ERRORS, NAMESPACES, NAMESPACES_ADDED, NAMESPACES_REMOVED  # noqa: F401

POLLS = Counter("xtcp2_polls_total", "Completed poll cycles")
POLL_SECONDS = Histogram(
    "xtcp2_poll_duration_seconds", "Wall time of one poll cycle over all namespaces",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SOCKETS = Counter("xtcp2_sockets_total", "Sockets read from inet_diag", ["family"])
RECORDS = Counter("xtcp2_records_total", "Records produced (after -modulus), every trigger")
RECORDS_BY_TRIGGER = Counter("xtcp2_records_by_trigger_total",
                             "Records produced (after -modulus) by trigger: poll, open, close, refresh, resync",
                             ["trigger"])
for _t in ("poll", "open", "close", "refresh", "resync"):
    RECORDS_BY_TRIGGER.labels(_t)
SINK_JOIN_ERRORS = Counter("xtcp2_sink_join_errors_total",
                           "Identity joins that failed on a batch (its records went out without those columns)")
POLL_TICKS_SKIPPED = Counter("xtcp2_poll_ticks_skipped_total",
                             "Scheduled polls skipped because the previous poll was still running at their time")
NETLINK_ERRORS = Counter(
    "xtcp2_netlink_errors_total",
    "Netlink dump problems: error (NLMSG_ERROR), enobufs, timeout, interrupted (NLM_F_DUMP_INTR), truncated",
    ["kind"],
)
NAMESPACES_SKIPPED = Counter(
    "xtcp2_namespaces_skipped_total", "Namespace polls skipped because sockstat counts no TCP socket there"
)
ITER_ERRORS = Counter(
    "xtcp2_iter_errors_total", "BPF iterator reads that failed; that namespace was dumped with inet_diag instead"
)
ENVELOPES = Counter("xtcp2_envelopes_total", "Envelopes marshalled and handed to the destination")
DEST_RECORDS = Counter("xtcp2_dest_sent_records_total", "Records delivered", ["dest"])
DEST_BYTES = Counter("xtcp2_dest_sent_bytes_total", "Bytes delivered", ["dest"])
DEST_ERRORS = Counter("xtcp2_dest_errors_total", "Failed deliveries", ["dest"])
DEST_DROPS = Counter("xtcp2_dest_dropped_records_total", "Records dropped (queue full, failed delivery, shutdown)", ["dest"])
DEST_QUEUE = Gauge("xtcp2_dest_queue_depth", "Payloads waiting for the destination", ["dest"])
DEST_SECONDS = Histogram("xtcp2_dest_send_duration_seconds", "Time to deliver one payload", ["dest"])

# Labelled counters exist at zero from the first scrape (rate() and alerts need the
# series before the first event): every label value the code uses is created here.
for _kind in ("error", "enobufs", "timeout", "truncated", "interrupted", "poll_timeout"):
    NETLINK_ERRORS.labels(_kind)
for _what in ("inet_diag_msg", "rtattr"):
    DECODE_ERRORS.labels(_what)
for _kind in ("enter", "vanished"):
    NAMESPACE_ERRORS.labels(_kind)


def touch_dest(dest: str) -> None:
    """The destination's labelled series, at zero until it sends (Emitter.configure)."""
    for metric in (DEST_RECORDS, DEST_BYTES, DEST_ERRORS, DEST_DROPS, DEST_QUEUE):
        metric.labels(dest)
