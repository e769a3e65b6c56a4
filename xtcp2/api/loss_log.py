"""A WARNING with counts whenever the kernel lost events we depend on.

Losses are counted where they happen (Prometheus counters); this reader turns their
increase into one log line per interval, so an operator reading logs, not dashboards,
sees them too, without a line per loss:

    WARNING lost since the last report (10s): 1234 ring-buffer events
    (xtcp2_bpf_ringbuf_drops_total, 1300 in total); 2 destroy-broadcast overruns ...

It reads the counters by name from the registry, so it is independent of which module
(collector or mode) owns them.
"""
from __future__ import annotations

import logging
import threading

from prometheus_client import REGISTRY

log = logging.getLogger("xtcp2.loss")

# counter sample name -> what one unit of it means
WATCHED = (
    ("xtcp2_bpf_ringbuf_drops_total", "ring-buffer events lost in the kernel (reservation failed)"),
    ("xtcp2_destroy_overruns_total", "destroy-broadcast overruns (ENOBUFS: close broadcasts lost)"),
)


class LossReporter:
    def __init__(self, interval: float = 10.0, registry=REGISTRY) -> None:
        self.interval = interval
        self.registry = registry
        self._seen = {name: self._value(name) for name, _ in WATCHED}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xtcp2-loss-log", daemon=True)

    def _value(self, name: str) -> float:
        return self.registry.get_sample_value(name) or 0.0

    def report(self) -> str | None:
        """Log (and return) one WARNING line if any watched counter grew since the last call."""
        parts = []
        for name, what in WATCHED:
            now = self._value(name)
            grew = now - self._seen[name]
            self._seen[name] = now
            if grew > 0:
                parts.append(f"{grew:.0f} {what} ({name}, {now:.0f} in total)")
        if not parts:
            return None
        line = f"lost since the last report ({self.interval:g}s): " + "; ".join(parts) + "; a resync follows"
        log.warning("%s", line)
        return line

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.report()
            except Exception as e:  # noqa: BLE001 - a reporting bug must not take anything down
                log.debug("loss report failed: %s", e)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
