"""Prometheus metrics of socket identity (process and container enrichment)."""
from ..prom_light import Counter, Gauge

PROC_WALKS = Counter("xtcp2_identity_proc_walks_total", "Walks of /proc/*/fd started to find the owners of new sockets")
PROC_LINKS = Counter("xtcp2_identity_proc_fd_links_read_total", "fd links read by those walks")
SCAN_DEFERRED = Counter("xtcp2_identity_proc_walks_deferred_total",
                        "Polls whose new sockets waited for the next walk (walks are rate limited)")
SCAN_PARTIAL = Counter("xtcp2_identity_proc_walks_partial_total",
                       "Walks that hit their time budget and resume on the next poll")
ERRORS = Counter("xtcp2_identity_errors_total",
                 "Identity lookups that failed (docker: API unreachable, bad reply, timeout)", ["source"])
DOCKER_REQUESTS = Counter("xtcp2_identity_docker_requests_total", "Docker Engine API requests", ["kind"])
DOCKER_EVENTS = Counter("xtcp2_identity_docker_events_total", "Container events read from the Docker Engine API", ["action"])
CACHE = Gauge("xtcp2_identity_cache_entries", "Entries in the identity caches", ["cache"])
RECORDS = Counter("xtcp2_identity_records_total", "Records by what enrichment found for them", ["found"])
OWNERS_LEARNED = Counter("xtcp2_identity_owners_from_events_total",
                         "Sockets whose owner bpf mode took at connect() or listen(), with no /proc walk")
