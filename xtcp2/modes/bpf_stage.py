"""The records of one bpf-mode step, handed to the sink in one call at the step's end,
and the latency from kernel event to emitted record."""
from __future__ import annotations

import time

import numpy as np

from ..columns import Columns
from ..records.sink import RecordSink
from .bpf_metrics import BPF_LATENCY

SOURCES = {"open": 0, "close_destroy": 1, "close_bpf": 2}


class Stage:
    def __init__(self, sink: RecordSink) -> None:
        self.sink = sink
        self._parts: list[tuple[Columns, dict]] = []
        self._ktimes: list[tuple[str, np.ndarray]] = []
        self.latencies = np.zeros(1 << 16, np.float64)  # recent event->record latencies (seconds), a ring
        self.latency_source = np.zeros(1 << 16, np.uint8)  # SOURCES of each latency
        self.latency_count = 0

    def add(self, cols: Columns, consts: dict, ktimes: np.ndarray | None = None, source: str = "open") -> int:
        """Stage a batch; ktimes: kernel times (ns) of the events behind it, for the latency."""
        if cols.n == 0:
            return 0
        self._parts.append((cols, consts))
        if ktimes is not None and len(ktimes):
            self._ktimes.append((source, ktimes))
        return cols.n

    def clear(self) -> None:
        self._parts, self._ktimes = [], []

    def flush(self) -> int:
        """Emit everything staged as one batch; returns the records emitted."""
        if not self._parts:
            return 0
        parts, kts = self._parts, self._ktimes
        self.clear()
        n = self.sink.emit_parts(parts)
        self.sink.flush()
        t = time.monotonic_ns()
        for source, kt in kts:
            lat = (t - kt.astype(np.int64)) / 1e9
            k = len(lat)
            for v in lat[::max(1, k // 16)].tolist():  # sampled: <= 16 observations per part
                BPF_LATENCY.labels(source).observe(max(0.0, v))
            idx = (self.latency_count + np.arange(k)) % len(self.latencies)
            self.latencies[idx] = lat
            self.latency_source[idx] = SOURCES[source]
            self.latency_count += k
        return n
