"""Keeps the BPF ring buffer drained while the bpf loop is held by a long job.

The loop reads the ring between its other jobs. A dump (refresh, resync), a namespace
reconcile, a coalesced lookup dump, or under load a step with a big batch of events to
encode, can hold it for seconds on a loaded host, and at 20,000 events/s (5,000
connections/s) a 16 MiB ring is full in ~2 s: the kernel then loses events, each loss
costs a full resync, and the resync holds the loop longer still.

While the loop is inside `busy()` a helper thread copies committed records out of the
ring every few milliseconds into a backlog; the loop's next `read()` returns the backlog
first, then the ring, in order. The named long jobs wake the thread at once
(`busy(force=True)`); a plain step only when the drain is armed, which the loop does
after a long step or with the ring filling up (`arm()`), for a while. So a loop that
keeps up pays no extra wakeups. The backlog is bounded (default: the ring's own size);
when it is full the thread stops copying and the ring fills up, so a loss is still a
kernel reservation failure, counted where it always was.
"""
from __future__ import annotations

import collections
import threading
import time
from contextlib import contextmanager
from typing import Iterator

import numpy as np

from ..ebpf.ringbuf import RingBufferReader
from ..ebpf.tcp_events import RECORD_STRIDE
from .bpf_metrics import BPF_DRAINED


class RingDrain:
    def __init__(self, reader: RingBufferReader, max_bytes: int | None = None, interval: float = 0.005) -> None:
        self.reader = reader
        self.max_records = max(1, (max_bytes or reader.size) // RECORD_STRIDE)
        self.interval = interval
        self._lock = threading.Lock()  # one reader of the ring at a time; guards the backlog
        self._backlog: collections.deque[np.ndarray] = collections.deque()
        self._backlog_n = 0
        self._depth = 0       # busy() nesting: the loop is inside a step or a long job
        self._forced = 0      # ... of which long jobs
        self._armed_until = 0.0
        self._wake = threading.Event()
        self._closed = False
        self.copied = 0      # records that went through the backlog
        self.peak = 0        # largest backlog seen, records
        self._thread = threading.Thread(target=self._run, name="xtcp2-bpf-drain", daemon=True)
        self._thread.start()

    @contextmanager
    def busy(self, force: bool = True) -> Iterator[None]:
        """The loop's thread is about to do something that may take long (force), or a
        step that does only while armed (force=False). Nests."""
        self._depth += 1
        self._forced += force
        if force or time.monotonic() < self._armed_until:
            self._wake.set()
        try:
            yield
        finally:
            self._depth -= 1
            self._forced -= force

    def arm(self, seconds: float) -> None:
        """Drain during the loop's plain steps too, for the next `seconds`."""
        self._armed_until = time.monotonic() + seconds

    def backlog(self) -> int:
        return self._backlog_n

    def read(self, max_records: int) -> np.ndarray:
        """Up to max_records records: the backlog's oldest first, then the ring's."""
        with self._lock:
            if not self._backlog_n:
                return self.reader.read(max_records)
            parts, n = [], 0
            while self._backlog and n < max_records:
                head = self._backlog[0]
                take = min(len(head), max_records - n)
                if take == len(head):
                    self._backlog.popleft()
                else:
                    self._backlog[0] = head[take:]
                    head = head[:take]
                parts.append(head)
                n += take
            self._backlog_n -= n
            if n < max_records:
                parts.append(self.reader.read(max_records - n))
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _active(self) -> bool:
        return self._forced > 0 or time.monotonic() < self._armed_until

    def _run(self) -> None:
        while not self._closed:
            if not self._active():
                self._wake.clear()
                if not self._active() and not self._closed:  # re-checked: a set() in between stays set
                    self._wake.wait()
                continue
            time.sleep(self.interval)
            if self._depth > 0:  # between steps the loop reads the ring itself
                self._drain_once()

    def _drain_once(self) -> None:
        if self.reader.pending_bytes() <= 0 or self._backlog_n >= self.max_records:
            return
        with self._lock:
            if self._depth <= 0:
                return
            rec = self.reader.read(self.max_records - self._backlog_n)
            if len(rec):
                self._backlog.append(rec)
                self._backlog_n += len(rec)
                self.copied += len(rec)
                self.peak = max(self.peak, self._backlog_n)
        if len(rec):
            BPF_DRAINED.inc(len(rec))

    def close(self) -> None:
        """Stop the thread; records still in the backlog are dropped with the reader."""
        self._closed = True
        self._wake.set()
        self._thread.join(5)
        with self._lock:
            self._backlog.clear()
            self._backlog_n = 0
