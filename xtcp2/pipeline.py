"""Right-hand side of the data flow, shared by poll and bpf modes:
encoded rows -> Envelopes (by rows/bytes) -> marshaller -> destination, plus live listeners.

Envelope bodies are concatenations of length-delimited rows, so batching across
namespaces and chunks is byte concatenation: rows are never re-encoded.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

import numpy as np

from . import metrics
from .config import Config
from .dest import Destination, open_destination
from .errors import DestinationError
from .marshal import get_marshaller
from .records.envelope import EncodedEnvelope

log = logging.getLogger(__name__)
Listener = Callable[[EncodedEnvelope], None]


class _RateLimitedLog:
    def __init__(self, every: float = 10.0) -> None:
        self.every = every
        self.last = 0.0
        self.suppressed = 0

    def warning(self, msg: str, *args) -> None:
        now = time.monotonic()
        if now - self.last >= self.every:
            if self.suppressed:
                msg += f" (and {self.suppressed} similar since last report)"
            log.warning(msg, *args)
            self.last, self.suppressed = now, 0
        else:
            self.suppressed += 1


class Emitter:
    def __init__(self, config: Config, destination: Destination | None = None) -> None:
        self._lock = threading.Lock()
        self._listeners: list[Listener] = []
        self._pieces: list[bytes] = []
        self._ends: list[np.ndarray] = []  # row end offsets of the pieces, in the envelope body
        self._rows = 0
        self._bytes = 0
        self._errlog = _RateLimitedLog()
        self.dest: Destination | None = None
        self.configure(config, destination)

    def configure(self, config: Config, destination: Destination | None = None) -> None:
        """Apply marshaller, limits and destination of `config` (flushing under the old ones)."""
        with self._lock:
            if self.dest is not None:
                self._flush_locked()
            old = self.dest
            if destination is None and (old is None or config.dest != self.config.dest):
                destination = open_destination(config.dest, config)
            elif destination is None and old is not None and hasattr(old, "reconfigure"):
                old.reconfigure(config)  # same address, new knobs (SetS3Upload)
            if destination is not None:
                self.dest = destination
                self.dest_name = config.dest.split(":", 1)[0]
                metrics.touch_dest(self.dest_name)
                if old is not None and old is not destination:
                    self._close_dest(old)
            fmt = (config.marshal_to, config.csv_columns)
            if fmt != getattr(self, "_fmt", None) or destination is not None:
                # kept across other changes: csv/tsv write their header once per stream
                self.marshal = get_marshaller(config.marshal_to, config)
                self._fmt = fmt
            self.config = config
            self.max_rows = config.envelope_flush_threshold_rows
            self.max_bytes = config.envelope_flush_threshold_bytes

    def add_listener(self, fn: Listener) -> None:
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Listener) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    def add_rows(self, body: bytes, row_ends: np.ndarray) -> None:
        """Queue encoded rows (row_ends = end offset of each row in body)."""
        n = len(row_ends)
        start_row, start_byte = 0, 0
        with self._lock:
            while start_row < n:
                room_rows = self.max_rows - self._rows
                room_bytes = self.max_bytes - self._bytes
                limit = int(np.searchsorted(row_ends, start_byte + room_bytes, side="right"))
                stop = min(limit, start_row + room_rows, n)
                if stop <= start_row:
                    if self._rows:
                        self._flush_locked()
                        continue
                    stop = start_row + 1  # one row larger than the byte cap travels alone
                stop_byte = int(row_ends[stop - 1])
                self._pieces.append(body[start_byte:stop_byte] if (start_byte or stop_byte != len(body)) else body)
                self._ends.append(row_ends[start_row:stop].astype(np.int64, copy=False) + (self._bytes - start_byte))
                self._rows += stop - start_row
                self._bytes += stop_byte - start_byte
                start_row, start_byte = stop, stop_byte
                if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
                    self._flush_locked()

    def flush(self) -> None:
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        if not self._rows:
            return
        ends = np.concatenate(self._ends) if len(self._ends) > 1 else self._ends[0]
        env = EncodedEnvelope(b"".join(self._pieces), self._rows, row_ends=ends)
        self._pieces, self._ends, self._rows, self._bytes = [], [], 0, 0
        self._deliver(env)

    def _deliver(self, env: EncodedEnvelope) -> None:
        metrics.ENVELOPES.inc()
        try:
            payload = self.marshal(env)
        except Exception as e:  # a marshaller bug must not take the daemon down
            metrics.DEST_DROPS.labels(self.dest_name).inc(env.rows)
            self._errlog.warning("marshal %s failed, %d records dropped: %s", self.config.marshal_to, env.rows, e)
            payload = None
        if payload is not None:
            t0 = time.perf_counter()
            try:
                self.dest.send(payload, env.rows)
            except DestinationError as e:
                metrics.DEST_ERRORS.labels(self.dest_name).inc()
                metrics.DEST_DROPS.labels(self.dest_name).inc(env.rows)
                self._errlog.warning("%s, %d records dropped", e, env.rows)
            else:
                # queued destinations count at real delivery; count here only for synchronous ones
                if not getattr(self.dest, "accounts_itself", False):
                    metrics.DEST_SECONDS.labels(self.dest_name).observe(time.perf_counter() - t0)
                    metrics.DEST_RECORDS.labels(self.dest_name).inc(env.rows)
                    metrics.DEST_BYTES.labels(self.dest_name).inc(len(payload))
        for fn in self._listeners:
            try:
                fn(env)
            except Exception as e:
                self._errlog.warning("record listener failed: %s", e)

    def _close_dest(self, dest: Destination) -> None:
        try:
            if not getattr(dest, "flushes_on_close", False):  # queued ones drain within their flushTimeout
                dest.flush(5.0)
            dest.close()
        except Exception as e:
            log.warning("closing destination %s: %s", getattr(dest, "scheme", "?"), e)

    def close(self) -> None:
        with self._lock:
            self._flush_locked()
            if self.dest is not None:
                self._close_dest(self.dest)
                self.dest = None
