"""Upstream's metric names, derived at scrape time from xtcp2's own metrics.

Upstream (Go xtcp2, pkg/xtcp/prometheus.go) exposes one counter vector
`xtcp_counts{function,variable,type}`, a summary `xtcp_histograms{...,quantile}`, the
namespace gauge `xtcp_gauge` and `xtcp_config_grpc_counts`; its Grafana dashboard and
self-test read them. The same series are computed here from xtcp2_* so dashboards and
scripts written for upstream keep working. Nothing is counted twice: these are views.

Mapping (function, variable, type) <- xtcp2 metric:
  Netlinker/p/count, Netlinker/packets/count  <- xtcp2_sockets_total (one inet_diag message per socket)
  Poller/envelopeRows/count                   <- xtcp2_records_total
  Poller/pollRequestCh/count                  <- TriggerPoll + TriggerPollBurst calls
  netNamespaceInstance/start/counter          <- xtcp2_namespaces_added_total
  delete/delete/counter                       <- xtcp2_namespaces_removed_total
  flatRecordServiceSend/frSent|pfrSent/count  <- xtcp2_grpc_stream_sent_records_total{method}
  Netlinker/<kind>/error                      <- xtcp2_netlink_errors_total{kind}
  Deserialize/<what>/error                    <- xtcp2_decode_errors_total{what}
  netNamespace/<kind>/error                   <- xtcp2_namespace_errors_total{kind}
  dest/<dest>/error                           <- xtcp2_dest_errors_total{dest}
  xtcp_histograms{Poller,pollDuration,seconds} <- quantiles 0.1/0.5/0.99 of xtcp2_poll_duration_seconds
    (interpolated in its buckets, over the process lifetime; upstream's summary is windowed)
  xtcp_gauge                                  <- xtcp2_namespaces
  xtcp_config_grpc_counts{method,start|code,counter|error} <- xtcp2_grpc_requests_total
"""
from __future__ import annotations

import threading

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, SummaryMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector

from .. import metrics as m
from .config_service import REQUESTS
from .record_fanout import STREAM_SENT

LABELS = ["function", "variable", "type"]


def _samples(metric, suffix: str = "_total") -> list[tuple[dict, float]]:
    """(labels, value) of a prometheus_client metric's samples ending in suffix."""
    out = []
    for fam in metric.collect():
        for s in fam.samples:
            if s.name.endswith(suffix):
                out.append((s.labels, s.value))
    return out


def _total(metric) -> float:
    return sum(v for _, v in _samples(metric))


def quantile_from_buckets(buckets: list[tuple[float, float]], q: float) -> float:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs, +Inf last."""
    total = buckets[-1][1] if buckets else 0.0
    if total <= 0:
        return float("nan")
    rank = q * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0.0)
        prev_le, prev_c = le, c
    return prev_le


class UpstreamCollector(Collector):
    def describe(self):
        # registering must not run collect(): it reads other metrics under the registry lock
        return []

    def collect(self):
        # untyped: prometheus_client would append _total to a counter, and upstream's
        # series are named without it (Go's client does not add the suffix)
        counts = UnknownMetricFamily("xtcp_counts", "xtcp counts", labels=LABELS)
        sockets = _total(m.SOCKETS)
        counts.add_metric(["Netlinker", "p", "count"], sockets)
        counts.add_metric(["Netlinker", "packets", "count"], sockets)
        counts.add_metric(["Poller", "envelopeRows", "count"], _total(m.RECORDS))
        trig = sum(v for lab, v in _samples(REQUESTS) if lab.get("method") in ("TriggerPoll", "TriggerPollBurst"))
        counts.add_metric(["Poller", "pollRequestCh", "count"], trig)
        counts.add_metric(["netNamespaceInstance", "start", "counter"], _total(m.NAMESPACES_ADDED))
        counts.add_metric(["delete", "delete", "counter"], _total(m.NAMESPACES_REMOVED))
        sent = {lab.get("method"): v for lab, v in _samples(STREAM_SENT)}
        counts.add_metric(["flatRecordServiceSend", "frSent", "count"], sent.get("FlatRecords", 0.0))
        counts.add_metric(["flatRecordServiceSend", "pfrSent", "count"], sent.get("PollFlatRecords", 0.0))
        for metric, function, key in ((m.NETLINK_ERRORS, "Netlinker", "kind"), (m.DECODE_ERRORS, "Deserialize", "what"),
                                      (m.NAMESPACE_ERRORS, "netNamespace", "kind"), (m.DEST_ERRORS, "dest", "dest")):
            for lab, v in _samples(metric):
                counts.add_metric([function, lab[key], "error"], v)
        yield counts

        buckets = sorted(((float(s.labels["le"]), s.value) for fam in m.POLL_SECONDS.collect()
                          for s in fam.samples if s.name.endswith("_bucket")), key=lambda b: b[0])
        summ = SummaryMetricFamily("xtcp_histograms", "xtcp historgrams", labels=LABELS)
        psum = sum(s.value for fam in m.POLL_SECONDS.collect() for s in fam.samples if s.name.endswith("_sum"))
        count = buckets[-1][1] if buckets else 0.0
        summ.add_metric(["Poller", "pollDuration", "seconds"], count_value=count, sum_value=psum)
        for q in (0.1, 0.5, 0.99):
            summ.samples.append(type(summ.samples[0])(
                "xtcp_histograms", {"function": "Poller", "variable": "pollDuration", "type": "seconds",
                                    "quantile": repr(q)}, quantile_from_buckets(buckets, q), None, None))
        yield summ

        yield GaugeMetricFamily("xtcp_gauge", "xtcp network namespace gauge",
                                value=sum(v for _, v in _samples(m.NAMESPACES, "")))

        grpc = UnknownMetricFamily("xtcp_config_grpc_counts", "xtcp config grpc counts", labels=LABELS)
        per_method: dict[str, float] = {}
        for lab, v in _samples(REQUESTS):
            per_method[lab["method"]] = per_method.get(lab["method"], 0.0) + v
            if lab.get("code") != "OK":
                grpc.add_metric([lab["method"], lab.get("code", ""), "error"], v)
        for method, v in sorted(per_method.items()):
            grpc.add_metric([method, "start", "counter"], v)
        yield grpc


_registered = False
_lock = threading.Lock()


def register_upstream_metrics(registry=REGISTRY) -> None:
    """Idempotent, like register_process_metrics."""
    global _registered
    with _lock:
        if not _registered:
            registry.register(UpstreamCollector())
            _registered = True
