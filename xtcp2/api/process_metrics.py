"""Process resource metrics (CPU, memory, file descriptors, threads) read through psutil,
and xtcp2_build_info.

A custom collector so values are read at scrape time, not on a timer. Named with the
xtcp2_ prefix so dashboards do not depend on prometheus_client's optional built-in
process collector, which is unregistered so the same numbers are not exposed twice
(process_* and xtcp2_process_*). `_created` series are off (disable_created_metrics):
they double the series count and no dashboard reads them.
"""
from __future__ import annotations

import threading

import platform

import psutil
from prometheus_client import PROCESS_COLLECTOR, REGISTRY, disable_created_metrics
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from .. import SCHEMA_VERSION, __version__

disable_created_metrics()


class ProcessCollector(Collector):
    def __init__(self, pid: int | None = None) -> None:
        self._proc = psutil.Process(pid)

    def collect(self):
        info = GaugeMetricFamily("xtcp2_build_info", "Always 1; the labels say which xtcp2 runs",
                                 labels=["version", "schema_version", "python"])
        info.add_metric([__version__, str(SCHEMA_VERSION), platform.python_version()], 1)
        yield info
        p = self._proc
        try:
            with p.oneshot():
                cpu = p.cpu_times()
                mem = p.memory_info()
                fds = p.num_fds()
                threads = p.num_threads()
                ctx = p.num_ctx_switches()
                start = p.create_time()
            soft_fds, _ = p.rlimit(psutil.RLIMIT_NOFILE)
        except (psutil.Error, OSError):
            return  # a failed read must not fail the whole scrape
        c = CounterMetricFamily("xtcp2_process_cpu_seconds", "CPU time used by the xtcp2 process", labels=["mode"])
        c.add_metric(["user"], cpu.user)
        c.add_metric(["system"], cpu.system)
        yield c
        yield GaugeMetricFamily("xtcp2_process_resident_memory_bytes", "Resident set size", value=mem.rss)
        yield GaugeMetricFamily("xtcp2_process_virtual_memory_bytes", "Virtual memory size", value=mem.vms)
        yield GaugeMetricFamily("xtcp2_process_open_fds", "Open file descriptors", value=fds)
        yield GaugeMetricFamily("xtcp2_process_max_fds", "Soft limit on open file descriptors", value=soft_fds)
        yield GaugeMetricFamily("xtcp2_process_threads", "Operating system threads", value=threads)
        cs = CounterMetricFamily("xtcp2_process_context_switches", "Context switches", labels=["kind"])
        cs.add_metric(["voluntary"], ctx.voluntary)
        cs.add_metric(["involuntary"], ctx.involuntary)
        yield cs
        yield GaugeMetricFamily("xtcp2_process_start_time_seconds", "Process start time, Unix seconds", value=start)


_registered = False
_lock = threading.Lock()


def register_process_metrics(registry=REGISTRY) -> None:
    """Idempotent: safe to call from every server start."""
    global _registered
    with _lock:
        if not _registered:
            registry.register(ProcessCollector())
            try:
                registry.unregister(PROCESS_COLLECTOR)
            except KeyError:  # not in this registry (a test's own)
                pass
            _registered = True
