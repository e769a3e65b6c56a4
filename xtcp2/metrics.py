"""Prometheus metrics of the collection pipeline.

Defined once at import on prometheus_client's default registry. Names carry the
xtcp2_ prefix and their unit. Per-namespace labels are deliberately absent: a host
with thousands of namespaces must not produce thousands of series. Feature modules
(grpc, bpf, destinations) define their own metrics next to their code, same rules.
"""
from prometheus_client import Counter, Gauge, Histogram

POLLS = Counter("xtcp2_polls_total", "Completed poll cycles")
POLL_SECONDS = Histogram(
    "xtcp2_poll_duration_seconds", "Wall time of one poll cycle over all namespaces",
    buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SOCKETS = Counter("xtcp2_sockets_total", "Sockets read from inet_diag", ["family"])
RECORDS = Counter("xtcp2_records_total", "Records produced (after -modulus)")
NETLINK_ERRORS = Counter(
    "xtcp2_netlink_errors_total",
    "Netlink dump problems: error (NLMSG_ERROR), enobufs, timeout, interrupted (NLM_F_DUMP_INTR), truncated",
    ["kind"],
)
DECODE_ERRORS = Counter(
    "xtcp2_decode_errors_total", "Malformed messages or attributes skipped by the decoder", ["what"]
)
NAMESPACES_SKIPPED = Counter(
    "xtcp2_namespaces_skipped_total", "Namespace polls skipped because sockstat counts no TCP socket there"
)
ITER_ERRORS = Counter(
    "xtcp2_iter_errors_total", "BPF iterator reads that failed; that namespace was dumped with inet_diag instead"
)
NAMESPACES = Gauge("xtcp2_namespaces", "Network namespaces currently watched")
NAMESPACES_ADDED = Counter("xtcp2_namespaces_added_total", "Namespaces that got a netlink socket")
NAMESPACES_REMOVED = Counter("xtcp2_namespaces_removed_total", "Namespaces whose socket was closed because they disappeared")
NAMESPACE_ERRORS = Counter(
    "xtcp2_namespace_errors_total", "Namespaces that could not be entered or vanished mid-dump", ["kind"]
)
ENVELOPES = Counter("xtcp2_envelopes_total", "Envelopes marshalled and handed to the destination")
DEST_RECORDS = Counter("xtcp2_dest_sent_records_total", "Records delivered", ["dest"])
DEST_BYTES = Counter("xtcp2_dest_sent_bytes_total", "Bytes delivered", ["dest"])
DEST_ERRORS = Counter("xtcp2_dest_errors_total", "Failed deliveries", ["dest"])
DEST_DROPS = Counter("xtcp2_dest_dropped_records_total", "Records dropped (queue full, failed delivery, shutdown)", ["dest"])
DEST_QUEUE = Gauge("xtcp2_dest_queue_depth", "Payloads waiting for the destination", ["dest"])
DEST_SECONDS = Histogram("xtcp2_dest_send_duration_seconds", "Time to deliver one payload", ["dest"])
