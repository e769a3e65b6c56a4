"""Prometheus metrics of --mode bpf (defined at import, so they exist from the first scrape)."""
from ..prom_light import Counter, Gauge, Histogram

BPF_EVENTS = Counter("xtcp2_bpf_events_total", "Events read from the BPF ring buffer", ["kind"])
BPF_DROPS = Counter("xtcp2_bpf_ringbuf_drops_total", "BPF ring buffer reservation failures (events lost in the kernel)")
BPF_DRAINED = Counter("xtcp2_bpf_ringbuf_backlog_records_total",
                      "Ring buffer records copied aside while the bpf loop was held by a dump or reconcile "
                      "(kept, not lost: read right after)")
BPF_LOOKUPS = Counter("xtcp2_bpf_lookups_total",
                      "Targeted inet_diag reads after open events: found, gone (closed before the read), "
                      "no_namespace (namespace could not be entered), error", ["result"])
BPF_COALESCED = Counter("xtcp2_bpf_coalesced_dumps_total", "Per-namespace filtered dumps replacing many lookups")
BPF_CLOSES = Counter("xtcp2_bpf_close_records_total",
                     "Close records by source: destroy (sock_diag broadcast), bpf (in-kernel counters); not reported: "
                     "not_watched (namespace excluded by --netns), destroy_late (broadcast of a socket already reported), "
                     "no_cookie_broadcast (classic tracepoint: the broadcast is the record)", ["source"])
BPF_BROADCASTS_FILTERED = Counter("xtcp2_bpf_destroy_broadcasts_filtered_total",
                                  "Destroy broadcasts dropped in the kernel: their socket's close was in the ring buffer")
BPF_RESYNCS = Counter("xtcp2_bpf_resyncs_total", "Full resyncs by reason", ["reason"])
BPF_ERRORS = Counter("xtcp2_bpf_errors_total", "Collector steps that failed unexpectedly (followed by a resync)")
BPF_PENDING = Gauge("xtcp2_bpf_pending_events", "Events waiting for a lookup or for their destroy broadcast")
BPF_LATENCY = Histogram("xtcp2_bpf_event_to_record_seconds",
                        "Kernel event to record delivered by the emitter (sampled), by record source: "
                        "open (lookup), close_destroy (broadcast), close_bpf (in-kernel counters)", ["source"],
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))
