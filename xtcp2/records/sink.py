"""The record sink: the one place where columns become records on their way out.

Every producer hands it Columns plus the constants it knows (namespace, trigger,
netlinker...): poll dumps, bpf lookups, close records from bpf events or the destroy
groups, refreshes and resyncs. The sink alone

  1. joins identity columns (see `_join`) and feeds the TCP metrics,
  2. keeps every -modulus'th socket, on one record_counter sequence for all producers,
  3. stamps the base constants (versions, hostname, location, label, tag),
     timestamp_ns and record_counter,
  4. encodes, queues the rows on the emitter and counts them.

It is called from several threads at once (one per netlinker); only the counter
needs the lock, encoding runs outside it.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Mapping, Protocol

import numpy as np

from .. import SCHEMA_VERSION, __version__, metrics
from ..columns import Columns, merge
from ..gen.xtcp_flat_record.v1.fields import TRIGGER
from ..tcp_metrics import TCP
from .encode import encode_rows

log = logging.getLogger(__name__)

# Rows encoded per encode_rows call. The encoder's (slots x rows) matrices take ~1.9 KB
# per row while they live: a 9,700-row iterator chunk needed ~18 MiB at once, 4,096 rows
# ~7.5 MiB. The call's fixed cost (~0.5 ms) is small against ~2.5 us per row.
ENCODE_ROWS = 4096

# Trigger enum value -> metric label ("poll", "open", "close", "refresh", "resync")
TRIGGER_NAMES = {number: name.removeprefix("TRIGGER_").lower() for name, number in TRIGGER.items()}

# A join adds columns to a batch in place (e.g. container id, pid, comm per socket).
# It gets the batch and its constants (netns, netns_inode, trigger...) and must not
# remove rows; it runs in the producer's thread, so it reads caches and never blocks.
# A per-batch field can be either: bpf mode merges namespaces into one batch, so there
# netns_inode is a column, while a poll chunk has it among the constants.
Join = Callable[[Columns, Mapping], None]


class RowsOut(Protocol):
    """Where encoded rows go (pipeline.Emitter)."""

    def add_rows(self, body: bytes, row_ends: np.ndarray) -> None: ...

    def flush(self) -> None: ...


class RecordSink:
    def __init__(self, config, out: RowsOut) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._counter = 0
        self._joins: tuple[Join, ...] = ()
        self._join_errors = 0
        self.configure(config)

    def configure(self, config) -> None:
        """Base constants and -modulus from a validated Config (applied from the next batch)."""
        self.base = {
            "schema_version": SCHEMA_VERSION, "daemon_version": __version__,
            "hostname": config.hostname, "location": config.location,
            "label": config.label, "tag": config.tag,
        }
        self.modulus = max(1, int(config.modulus))
        TCP.configure(config.metrics_max_netns)

    def add_join(self, join: Join) -> None:
        self._joins = self._joins + (join,)

    def remove_join(self, join: Join) -> None:
        self._joins = tuple(j for j in self._joins if j is not join)

    @property
    def record_counter(self) -> int:
        """Sockets handed to the sink so far (the last record_counter issued)."""
        return self._counter

    # ---- the data path ----------------------------------------------------------------
    def emit(self, cols: Columns, consts: Mapping | None = None) -> int:
        """Stamp, join, encode and queue one batch; returns the records queued.

        `consts` are fields equal for every row of the batch (netns, trigger...); the
        sink's own (base constants, timestamp_ns) win over a producer's."""
        n = cols.n
        if n == 0:
            return 0
        cols = cols.copy()   # the producer's dict stays as it was handed over
        consts = dict(consts or {})
        # Identity first, on every socket: the TCP metrics are labelled by container, so
        # they must see the joined columns, and they count every socket (before -modulus).
        self._join(cols, consts)
        TCP.observe(cols, consts)
        with self._lock:
            start = self._counter
            self._counter += n
        if self.modulus > 1:
            keep = np.flatnonzero((start + np.arange(n, dtype=np.uint64)) % np.uint64(self.modulus) == 0)
            if not len(keep):
                return 0
            if len(keep) != n:
                cols = cols.take(keep)
            counter = keep.astype(np.uint64) + np.uint64(start + 1)
        else:
            counter = np.arange(start + 1, start + 1 + n, dtype=np.uint64)
        cols["record_counter"] = counter
        consts.update(self.base, timestamp_ns=time.time_ns())
        for start in range(0, cols.n, ENCODE_ROWS):
            part = cols if cols.n <= ENCODE_ROWS else cols.rows(start, start + ENCODE_ROWS)
            body, ends = encode_rows(part, part.n, consts)
            self.out.add_rows(body, ends)
        self._count(cols, consts)
        return cols.n

    def emit_parts(self, parts: list[tuple[Columns, Mapping]]) -> int:
        """Several batches with different constants encoded as one (encoding has a
        fixed cost per call: many small batches cost far more than one)."""
        parts = [(c, dict(k)) for c, k in parts if c.n]
        if not parts:
            return 0
        cols, consts = merge(parts)
        return self.emit(cols, consts)

    def flush(self) -> None:
        """Hand what is queued to the destination now."""
        self.out.flush()

    # ---- steps ----------------------------------------------------------------------------
    def _join(self, cols: Columns, consts: Mapping) -> None:
        """Identity joins add their columns here, before the TCP metrics and -modulus (the
        metrics see every socket with its container). A failing join costs its columns,
        never the records."""
        for join in self._joins:
            try:
                join(cols, consts)
            except Exception as e:
                self._join_errors += 1
                metrics.SINK_JOIN_ERRORS.inc()
                if self._join_errors <= 10 or self._join_errors % 1000 == 0:
                    log.warning("identity join %s failed (%d so far): %s",
                                getattr(join, "__name__", join), self._join_errors, e)

    def _count(self, cols: Columns, consts: Mapping) -> None:
        n = cols.n
        metrics.RECORDS.inc(n)
        trig = consts.get("trigger")
        if trig is not None:
            metrics.RECORDS_BY_TRIGGER.labels(TRIGGER_NAMES.get(int(trig), "other")).inc(n)
            return
        col = cols.get("trigger")
        if col is None:
            metrics.RECORDS_BY_TRIGGER.labels("poll").inc(n)  # proto3 default: TRIGGER_POLL
            return
        values, counts = np.unique(np.asarray(col), return_counts=True)
        for v, k in zip(values.tolist(), counts.tolist()):
            metrics.RECORDS_BY_TRIGGER.labels(TRIGGER_NAMES.get(int(v), "other")).inc(k)
