"""Fan-out of live records from the collector thread to gRPC stream clients.

The collector calls `FanOut.publish(env)` for every envelope. It must never wait, so
publish only appends a reference to each client's bounded queue (or counts a drop when
that queue is full) and wakes the gRPC event loop once. A client with a filter
(`xtcp2-filter`) has it applied here, before its queue: the few columns a filter reads
are taken from the envelope once, whatever the number of filtered clients, and each
filter is a numpy mask over them. So only matching records take queue room, and only
matching records can count as drops. Records still queued when a stream ends in order
(the client is done, or the server stops after sending what it can) are not drops:
they are counted in xtcp2_grpc_stream_unsent_records_total. All per-record work happens
later on the event loop thread: an Envelope body is a run of `row` (field 10) entries
and a Flat/PollFlatRecordsResponse is the same record bytes under field 1, so a
response is made by rewriting one tag byte, without parsing the record, once per
envelope however many clients receive it.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from prometheus_client import Counter, Gauge

from ..records.envelope import EncodedEnvelope

STREAM_CLIENTS = Gauge("xtcp2_grpc_stream_clients", "Connected live-record stream clients", ["method"])
STREAM_SENT = Counter("xtcp2_grpc_stream_sent_records_total", "Records written to stream clients", ["method"])
for _m in ("FlatRecords", "PollFlatRecords"):
    STREAM_SENT.labels(_m)
STREAM_DROPS = Counter(
    "xtcp2_grpc_stream_dropped_records_total",
    "Records a stream client did not get because its own queue was full (slow client), by the client's method",
    ["method"],
)
for _m in ("FlatRecords", "PollFlatRecords"):
    STREAM_DROPS.labels(_m)
STREAM_QUEUED = Gauge("xtcp2_grpc_stream_queued_records", "Records waiting in all stream clients' queues")
STREAM_UNSENT = Counter("xtcp2_grpc_stream_unsent_records_total",
                        "Records still queued for a stream client when its stream ended (not drops)")

DEFAULT_QUEUE_ROWS = 20_000
_ROW_TAG = 0x52  # field 10 (Envelope.row), wire type 2
_RESPONSE_TAG = b"\x0a"  # field 1 (FlatRecordsResponse.xtcp_flat_record), wire type 2


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def sliced_responses(body: bytes, row_ends: np.ndarray) -> list[bytes] | None:
    """envelope_responses() from known row boundaries: each row's tag byte becomes the
    response's and each response is one slice. None if the body is not rows only."""
    ends = np.asarray(row_ends, dtype=np.int64)
    if not len(ends):
        return [] if not body else None
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1]
    buf = np.frombuffer(body, np.uint8).copy()
    if int(ends[-1]) != len(body) or (buf[starts] != _ROW_TAG).any() or (ends <= starts + 1).any():
        return None
    buf[starts] = _RESPONSE_TAG[0]
    data = buf.tobytes()
    return [data[a:b] for a, b in zip(starts.tolist(), ends.tolist())]


def envelope_responses(body: bytes) -> list[bytes]:
    """Serialized FlatRecordsResponse messages, one per row of a serialized Envelope.

    Fields other than `row` are skipped. Raises ValueError on a truncated body.
    """
    out: list[bytes] = []
    pos, end = 0, len(body)
    while pos < end:
        key, p = _varint(body, pos)
        wt = key & 7
        if wt == 2:
            n, start = _varint(body, p)
            stop = start + n
            if stop > end:
                raise ValueError("truncated envelope")
            if key == _ROW_TAG:
                out.append(_RESPONSE_TAG + body[p:stop])  # length varint + record, as is
            pos = stop
        elif wt == 0:
            _, pos = _varint(body, p)
        elif wt == 1:
            pos = p + 8
        elif wt == 5:
            pos = p + 4
        else:
            raise ValueError(f"unexpected wire type {wt}")
    return out


class _Batch:
    """One envelope shared by every queue it was put in; responses built on first use."""

    __slots__ = ("env", "_responses", "_columns")

    def __init__(self, env: EncodedEnvelope) -> None:
        self.env = env
        self._responses: list[bytes] | None = None
        self._columns: dict | None = None

    def filter_columns(self) -> dict:
        """The columns record filters read (netns, ports, state), taken once per envelope."""
        if self._columns is None:
            rows = self.env.message().row
            n = len(rows)
            self._columns = {
                "netns": np.array([r.netns for r in rows], dtype=object),
                "state": np.fromiter((r.inet_diag_msg_state for r in rows), np.uint32, n),
                "sport": np.fromiter((r.inet_diag_msg_socket_source_port for r in rows), np.uint32, n),
                "dport": np.fromiter((r.inet_diag_msg_socket_destination_port for r in rows), np.uint32, n),
            }
        return self._columns

    def responses(self) -> list[bytes]:
        # Only the event loop thread calls this, so no lock is needed.
        if self._responses is None:
            ends = getattr(self.env, "row_ends", None)
            got = sliced_responses(self.env.body, ends) if ends is not None else None
            self._responses = got if got is not None else envelope_responses(self.env.body)
        return self._responses


@dataclass(eq=False)
class Subscriber:
    """One stream client: a queue bounded in records and its own counters."""

    method: str
    peer: str
    max_rows: int
    id: int = 0
    queue: collections.deque = field(default_factory=collections.deque)
    queued_rows: int = 0
    sent_records: int = 0
    dropped_records: int = 0
    unsent_records: int = 0
    waiting: asyncio.Event | None = None
    closed: bool = False
    keep: Callable[[object], bool] | None = None  # server-side record filter


class FanOut:
    def __init__(self, loop: asyncio.AbstractEventLoop, queue_rows: int = DEFAULT_QUEUE_ROWS) -> None:
        self._loop = loop
        self._lock = threading.Lock()  # held only for O(clients) appends, never across I/O
        self._subs: list[Subscriber] = []
        self._ids = itertools.count(1)
        self.queue_rows = queue_rows
        self.published_envelopes = 0

    # ---- collector thread ------------------------------------------------------
    def publish(self, env: EncodedEnvelope) -> None:
        """Listener for Daemon.add_listener: O(clients), never blocks, never raises."""
        if not self._subs or env.rows <= 0:
            return
        batch = _Batch(env)
        wake = []
        dropped: dict[str, int] = {}
        masks: dict = {}  # filter -> matching row indexes (clients with the same filter share)
        with self._lock:
            self.published_envelopes += 1
            for s in self._subs:
                idx = None
                if s.keep is not None:
                    idx = masks.get(s.keep, False)
                    if idx is False:
                        try:
                            idx = np.flatnonzero(s.keep.mask(batch.filter_columns()))
                        except Exception:  # malformed envelope: the stream reports it later
                            idx = None
                        masks[s.keep] = idx
                    if idx is not None and not len(idx):
                        continue  # nothing for this client: no queue room, no drop
                rows = env.rows if idx is None else len(idx)
                if s.queued_rows + rows > s.max_rows:
                    s.dropped_records += rows
                    dropped[s.method] = dropped.get(s.method, 0) + rows
                    continue
                s.queue.append((batch, idx))
                s.queued_rows += rows
                STREAM_QUEUED.inc(rows)
                if s.waiting is not None:
                    wake.append(s.waiting)
        for method, rows in dropped.items():
            STREAM_DROPS.labels(method).inc(rows)
        if wake:
            try:
                self._loop.call_soon_threadsafe(_set_all, wake)
            except RuntimeError:  # loop already closed during shutdown
                pass

    # ---- event loop thread -----------------------------------------------------
    def subscribe(self, method: str, peer: str, keep: Callable[[object], bool] | None = None) -> Subscriber:
        s = Subscriber(method=method, peer=peer, max_rows=self.queue_rows, id=next(self._ids), keep=keep)
        s.waiting = asyncio.Event()
        with self._lock:
            self._subs.append(s)
        STREAM_CLIENTS.labels(method).inc()
        return s

    def unsubscribe(self, s: Subscriber) -> None:
        """Forget `s`. Records still queued for it are unsent, not dropped: its stream ended."""
        with self._lock:
            if s in self._subs:
                self._subs.remove(s)
                STREAM_CLIENTS.labels(s.method).dec()
            left = s.queued_rows
            STREAM_QUEUED.dec(left)
            s.unsent_records += left
            s.queue.clear()
            s.queued_rows = 0
            s.closed = True
        if left:
            STREAM_UNSENT.inc(left)

    async def next_batch(self, s: Subscriber, timeout: float) -> list[bytes] | None:
        """Responses of the next queued envelope, or None after `timeout` s with nothing."""
        while True:
            with self._lock:
                if s.queue:
                    batch, idx = s.queue.popleft()
                    rows = batch.env.rows if idx is None else len(idx)
                    s.queued_rows -= rows
                    STREAM_QUEUED.dec(rows)
                    break
                s.waiting.clear()
            if timeout <= 0:
                return None
            try:
                await asyncio.wait_for(s.waiting.wait(), timeout)
            except asyncio.TimeoutError:
                return None
        responses = batch.responses()
        if idx is not None:
            return [responses[i] for i in idx.tolist()]
        if s.keep is not None:  # the filter could not run at publish (malformed envelope)
            return [r for r, rec in zip(responses, batch.env.message().row) if s.keep(rec)]
        return responses

    def subscribers(self) -> list[Subscriber]:
        with self._lock:
            return list(self._subs)

    def close_all(self) -> None:
        for s in self.subscribers():
            s.closed = True
            if s.waiting is not None:
                s.waiting.set()


def _set_all(events: list[asyncio.Event]) -> None:
    for e in events:
        e.set()
