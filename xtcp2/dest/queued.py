"""The behaviour every network destination shares, so transport modules stay small.

QueuedDestination.send() never blocks: it appends the payload to a bounded in-memory
queue and returns. One background thread per destination drains the queue in batches
(rows / bytes / age, as the transport asks), delivers them with _deliver(), and on a
failure disconnects, backs off (capped exponential) and retries the SAME batch, so a
server outage only delays records. While the server is down the queue fills up to its
bound; payloads beyond it are dropped and counted (xtcp2_dest_dropped_records_total,
plus a rate-limited log line). close() flushes within a deadline and counts whatever
is still queued as dropped. Invariant the tests check:

    produced == sent + dropped        (once close() has returned)

A transport subclass implements:
    _connect()                open the connection (raise on failure)
    _deliver(batch)           deliver a list of Item; raise to retry the whole batch,
                              raise PermanentError to drop it (counted) and move on,
                              PartialFailure to drop only some items; a transport that
                              drops single records of an item counts them with _drop()
                              and lowers item.records before returning
    _disconnect()             drop the connection (must not raise)
and may set batch_max_items / batch_max_bytes / batch_max_seconds, and
`acks_async = True` when delivery is confirmed later through _ack()/_nack()
(Kafka delivery reports).

Common address options (after "?"), shared by every queued destination:
    queue=N           payloads kept while the server is slow or down (default 10000)
    queueBytes=N      bytes kept likewise (default 256 MiB)
    backoffMax=S      cap of the reconnect back-off in seconds (default 10)
    flushTimeout=S    how long close() waits to drain the queue (default 5); close()
                      returns within flushTimeout + CLOSE_GRACE even if the server hangs

Async transports hand each payload to their client library with _handed(item) (before
the hand-over, so an early report cannot find it missing) and hear back through _ack /
_nack / _requeue; what the library holds counts in the queue depth and, at shutdown, as
dropped unless it was confirmed. One summary line at close gives the exact totals.
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qs

from .. import values
from ..errors import DestinationError
from ..metrics import DEST_BYTES, DEST_DROPS, DEST_ERRORS, DEST_QUEUE, DEST_RECORDS, DEST_SECONDS
from .base import Destination

log = logging.getLogger(__name__)

COMMON_OPTIONS = {"queue", "queueBytes", "backoffMax", "flushTimeout"}
DEFAULT_FLUSH_TIMEOUT = 5.0
# What close() may take beyond flushTimeout: the sender leaving a transport call, and the
# transport dropping what it still holds. The daemon's stop budget is flushTimeout + 1 s.
CLOSE_GRACE = 0.5


class PermanentError(DestinationError):
    """A batch the server will never accept (too large, rejected): drop it, counted."""


class PartialFailure(DestinationError):
    """The batch was delivered except `rejected`, which the server will never accept."""

    def __init__(self, message: str, rejected: list) -> None:
        super().__init__(message)
        self.rejected = rejected


class Backpressure(DestinationError):
    """The client library's own buffer is full: wait and retry, the connection is fine."""


@dataclass
class Item:
    payload: bytes
    records: int
    enqueued: float = field(default_factory=time.monotonic)


def parse_options(scheme: str, query: str, allowed: set[str]) -> dict[str, str]:
    """Parse "a=1&b=2" into {"a": "1", ...}; unknown names are a one-line error."""
    opts = {k: v[-1] for k, v in parse_qs(query, keep_blank_values=True).items()} if query else {}
    unknown = set(opts) - allowed - COMMON_OPTIONS
    if unknown:
        valid = ", ".join(sorted(allowed | COMMON_OPTIONS))
        raise DestinationError(f"{scheme}: unknown option(s) {', '.join(sorted(unknown))}; valid: {valid}")
    return opts


def num_option(scheme: str, opts: dict, name: str, default: float, minimum: float, kind=int,
               maximum: float | None = None):
    """Option `name` as a finite number in [minimum, maximum] (xtcp2.values, as for flags
    and gRPC); float options are seconds, at most 7 days unless `maximum` says less."""
    raw = opts.get(name)
    if raw is None:
        return default
    integer = kind is int
    top = maximum if maximum is not None else (values.MAX_INT if integer else values.MAX_DURATION_S)
    try:
        return kind(values.parse_number(raw, minimum, top, integer=integer))
    except ValueError as e:
        raise DestinationError(f"{scheme}: option {name}={raw!r} {e}") from None


def split_host_port(scheme: str, hostport: str, default_port: int | None = None) -> tuple[str, int]:
    """"host:port", "[v6]:port" or "host" (with a default port) -> (host, port)."""
    host, port = hostport, None
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise DestinationError(f"{scheme}: bad address {hostport!r}: missing ']'")
        host, rest = hostport[1:end], hostport[end + 1:]
        if rest:
            if not rest.startswith(":"):
                raise DestinationError(f"{scheme}: bad address {hostport!r}")
            port = rest[1:]
    elif hostport.count(":") == 1:
        host, port = hostport.split(":")
    if not host:
        raise DestinationError(f"{scheme}: bad address {hostport!r}: expected host:port")
    if port is None:
        if default_port is None:
            raise DestinationError(f"{scheme}: bad address {hostport!r}: expected host:port")
        return host, default_port
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise DestinationError(f"{scheme}: bad port in {hostport!r}: expected 1..65535")
    return host, int(port)


class QueuedDestination(Destination):
    """Bounded queue + sender thread + reconnect + accounting around a transport."""

    # The pipeline must not count sent records/bytes/latency when send() returns: for a
    # queued destination that only means "queued". This wrapper counts them on delivery.
    accounts_itself: bool = True
    flushes_on_close = True   # close() drains within flushTimeout: no separate flush()
    batch_max_items: int = 1
    batch_max_records: int = 1 << 62
    batch_max_bytes: int = 1 << 62
    batch_max_seconds: float = 0.0
    acks_async: bool = False
    idle_interval: float = 0.0   # >0: call _idle() this often while connected and idle
    backoff_initial: float = 0.05
    log_interval: float = 10.0

    def __init__(self, address: str, config, opts: dict[str, str] | None = None) -> None:
        super().__init__(address, config)
        self.where = address.partition("?")[0]  # for log lines: the address without options
        opts = opts or {}
        s = self.scheme
        self.queue_max = num_option(s, opts, "queue", 10000, 1)
        self.queue_max_bytes = num_option(s, opts, "queueBytes", 256 << 20, 1024)
        self.backoff_max = num_option(s, opts, "backoffMax", 10.0, 0.01, float)
        self.flush_timeout = num_option(s, opts, "flushTimeout", DEFAULT_FLUSH_TIMEOUT, 0.0, float, maximum=3600.0)
        self._q: collections.deque[Item] = collections.deque()
        self._q_bytes = 0
        self._q_records = 0
        self._cv = threading.Condition()
        self._acct = threading.Lock()
        self._inflight: list[Item] = []     # the batch the sender is working on
        self._pending = 0                   # records handed to the client library, not yet acked
        self._pending_items = 0
        self._stop = False
        self._closed = False
        self._flushing = 0
        self._abandoned = False
        self._connected = False
        self._last_error = ""
        self._drops_unlogged = 0
        self._last_drop_log = 0.0
        self._m_records = DEST_RECORDS.labels(s)
        self._m_bytes = DEST_BYTES.labels(s)
        self._m_errors = DEST_ERRORS.labels(s)
        self._m_drops = DEST_DROPS.labels(s)
        self._m_queue = DEST_QUEUE.labels(s)
        self._m_seconds = DEST_SECONDS.labels(s)
        # Plain counters too: the shutdown invariant is checked on these, per instance.
        self.sent_records = 0
        self.dropped_records = 0
        self.errors = 0
        self._thread: threading.Thread | None = None

    # ---- the collector side -------------------------------------------------------
    def start(self) -> None:
        """Start the sender thread. Subclasses call this at the end of __init__."""
        self._thread = threading.Thread(target=self._run, name=f"xtcp2-dest-{self.scheme}", daemon=True)
        self._thread.start()

    def send(self, payload: bytes, records: int) -> None:
        with self._cv:
            if self._closed:
                self._drop(records, "destination closed")
                return
            if len(self._q) >= self.queue_max or self._q_bytes + len(payload) > self.queue_max_bytes:
                self._drop(records, "queue full")
                return
            self._q.append(Item(payload, records))
            self._q_bytes += len(payload)
            self._q_records += records
            self._set_depth()
            self._cv.notify()

    def flush(self, timeout: float = 5.0) -> None:
        """Wait until everything queued has been delivered (or timeout)."""
        deadline = time.monotonic() + timeout
        with self._cv:
            self._flushing += 1  # a batch being gathered goes out now, not at its time limit
            self._cv.notify_all()
            try:
                while (self._q or self._inflight or self._pending) and not self._stop:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cv.wait(min(left, 0.05))
            finally:
                self._flushing -= 1

    def close(self) -> None:
        """Deliver what can be delivered within flushTimeout, then stop; whatever is left
        is counted as dropped. Returns within flushTimeout + CLOSE_GRACE."""
        if self._closed:
            return
        deadline = time.monotonic() + self.flush_timeout
        self.flush(self.flush_timeout)
        dropped_before = self.dropped_records
        with self._cv:
            self._closed = True
            self._stop = True
            self._cv.notify_all()
        if self._thread:
            # the sender may be inside a transport call (bounded by its socket timeout):
            # give it a moment, then abandon it; whatever it still holds counts as dropped
            self._thread.join(max(0.0, deadline - time.monotonic()) + CLOSE_GRACE / 2)
        with self._cv:
            self._abandoned = True
            left = sum(i.records for i in self._q) + sum(i.records for i in self._inflight)
            self._q.clear()
            self._inflight = []
            self._q_bytes = 0
            self._q_records = 0
        if left:
            self._drop(left, "shutdown before delivery", quiet=True)
        try:
            self._close_transport(max(0.0, deadline - time.monotonic()))
        finally:
            with self._acct:
                unconfirmed, self._pending, self._pending_items = self._pending, 0, 0
            if unconfirmed > 0:
                self._drop(unconfirmed, "shutdown: delivery not confirmed", quiet=True)
            self._set_depth()
            self._disconnect()
            self._log_totals(dropped_before)

    def _log_totals(self, dropped_before: int) -> None:
        with self._acct:
            sent, dropped = self.sent_records, self.dropped_records
        if dropped:
            log.warning("%s %s: closed: %d records delivered, %d dropped in total (%d at shutdown)%s",
                        self.scheme, self.where, sent, dropped, dropped - dropped_before,
                        f"; last error: {self._last_error}" if self._last_error else "")
        else:
            log.info("%s %s: closed: %d records delivered, none dropped", self.scheme, self.where, sent)

    @property
    def connected(self) -> bool:
        """For /readyz: False while the server is unreachable (the last connect or send
        failed and none succeeded since). Before the first payload it is True: connecting
        is lazy, and a destination that has not failed yet is not known to be down."""
        return self._connected or not self._last_error

    @property
    def queue_depth(self) -> int:
        """Payloads not yet delivered: in our queue, and handed to the client library."""
        return len(self._q) + self._pending_items

    def _set_depth(self) -> None:
        self._m_queue.set(self.queue_depth)

    # ---- accounting ---------------------------------------------------------------
    def _drop(self, records: int, why: str, quiet: bool = False) -> None:
        """Count `records` as lost. Logged at most every log_interval; `quiet` for the
        shutdown path, whose summary line (_log_totals) gives the exact totals."""
        if records <= 0:
            return
        # called from the collector (queue full) and the sender thread: one lock
        with self._acct:
            self.dropped_records += records
            self._drops_unlogged += records
            now = time.monotonic()
            if quiet or now - self._last_drop_log < self.log_interval:
                self._m_drops.inc(records)
                return
            n, self._drops_unlogged, self._last_drop_log = self._drops_unlogged, 0, now
        self._m_drops.inc(records)
        log.warning("%s: dropped %d records (%s)%s", self.scheme, n, why,
                    f"; last error: {self._last_error}" if self._last_error else "")

    def _account_sent(self, records: int, nbytes: int, seconds: float) -> None:
        with self._acct:
            self.sent_records += records
        self._m_records.inc(records)
        self._m_bytes.inc(nbytes)
        self._m_seconds.observe(seconds)

    def _handed(self, item: Item) -> None:
        """Async transports: `item` is about to go to the client library; exactly one of
        _ack / _nack / _requeue / _unhand follows for it."""
        with self._acct:
            self._pending += item.records
            self._pending_items += 1

    def _unhand(self, item: Item) -> bool:
        """`item` is no longer with the client library. False if close() already counted
        it (the report came too late): the caller must not count it again."""
        with self._acct:
            if self._pending_items <= 0:
                return False
            self._pending -= item.records
            self._pending_items -= 1
        self._set_depth()
        return True

    def _ack(self, item: Item) -> None:
        """Async transports: the server confirmed `item`."""
        if self._unhand(item):
            self._account_sent(item.records, len(item.payload), time.monotonic() - item.enqueued)

    def _nack(self, item: Item, why: str) -> None:
        """Async transports: `item` is lost for good."""
        if self._unhand(item):
            self._count_error()
            self._last_error = why
            self._drop(item.records, why, quiet=self._closed)

    def _requeue(self, item: Item) -> None:
        """Async transports: `item` was taken back from the client library undelivered;
        put it at the head of the queue to be sent again (it may arrive twice)."""
        if not self._unhand(item):
            return
        with self._cv:
            if not self._abandoned:
                self._q.appendleft(item)
                self._q_bytes += len(item.payload)
                self._q_records += item.records
                self._set_depth()
                return
        self._drop(item.records, "shutdown before delivery", quiet=True)

    def _count_error(self) -> None:
        with self._acct:
            self.errors += 1
        self._m_errors.inc()

    def _error(self, e: BaseException) -> None:
        self._count_error()
        msg = str(e) or type(e).__name__
        if self._connected or msg != self._last_error:
            log.warning("%s %s: %s; retrying with back-off", self.scheme, self.where, msg)
        self._last_error = msg

    # ---- the sender thread --------------------------------------------------------
    def _take_batch(self) -> list[Item]:
        """Wait for items, then gather a batch within the transport's limits."""
        with self._cv:
            while not self._q and not self._stop:
                self._cv.wait(0.05 if self.acks_async else self.idle_interval or 5.0)
                if self.acks_async or self.idle_interval:
                    break
            if not self._q:
                return []
            first_at = self._q[0].enqueued
            while (self.batch_max_seconds and len(self._q) < self.batch_max_items and not self._stop
                   and self._q_bytes < self.batch_max_bytes
                   and self._q_records < self.batch_max_records):
                left = first_at + self.batch_max_seconds - time.monotonic()
                if left <= 0 or self._closed or self._flushing:
                    break
                self._cv.wait(left)
            batch, size, records = [], 0, 0
            while self._q and len(batch) < self.batch_max_items:
                it = self._q[0]
                if batch and (size + len(it.payload) > self.batch_max_bytes
                              or records + it.records > self.batch_max_records):
                    break
                records += it.records
                self._q_records -= it.records
                self._q.popleft()
                self._q_bytes -= len(it.payload)
                batch.append(it)
                size += len(it.payload)
            self._inflight = batch
            self._set_depth()
            return batch

    def _run(self) -> None:
        backoff = self.backoff_initial
        while True:
            if self.acks_async:
                self._poll_acks(0)
            batch = self._take_batch()
            if not batch:
                if self._stop:
                    return
                if self.idle_interval and self._connected:
                    try:
                        self._idle()
                    except Exception as e:  # noqa: BLE001
                        self._error(e)
                        self._connected = False
                        self._disconnect()
                continue
            while batch:
                if self._stop and self._closed and not self._connected:
                    return  # shutting down with the server away: close() counts the rest
                try:
                    if not self._connected:
                        self._connect()
                        self._connected = True
                        if self._last_error:
                            log.warning("%s %s: connected again", self.scheme, self.where)
                        self._last_error = ""
                    t0 = time.monotonic()
                    self._deliver(batch)
                    with self._cv:
                        if self._abandoned:
                            return  # close() already counted this batch as dropped
                    if not self.acks_async:
                        took = time.monotonic() - t0
                        for it in batch:
                            self._account_sent(it.records, len(it.payload), took)
                    backoff = self.backoff_initial
                    with self._cv:
                        self._inflight = []
                        self._cv.notify_all()
                    batch = []
                except Backpressure as e:
                    self._last_error = str(e)
                    self._poll_acks(min(backoff, 0.2))
                    with self._cv:
                        if self._stop:
                            return
                    backoff = min(backoff * 2, 0.2)
                except PartialFailure as e:
                    self._error(e)
                    took = time.monotonic() - t0
                    bad = {id(i) for i in e.rejected}
                    for it in batch:
                        if id(it) not in bad:
                            self._account_sent(it.records, len(it.payload), took)
                    self._drop(sum(i.records for i in e.rejected), str(e))
                    with self._cv:
                        self._inflight = []
                        self._cv.notify_all()
                    batch = []
                except PermanentError as e:
                    self._error(e)
                    self._drop(sum(i.records for i in batch), str(e))
                    with self._cv:
                        self._inflight = []
                        self._cv.notify_all()
                    batch = []
                except Exception as e:  # noqa: BLE001 - any transport failure means: reconnect and retry
                    self._error(e)
                    self._connected = False
                    try:
                        self._disconnect()
                    except Exception:  # noqa: BLE001
                        pass
                    with self._cv:
                        if self._stop:
                            return
                        self._cv.wait(backoff)
                    backoff = min(backoff * 2, self.backoff_max)

    # ---- transport hooks -------------------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _deliver(self, batch: list[Item]) -> None:
        raise NotImplementedError

    def _disconnect(self) -> None:
        pass

    def _idle(self) -> None:
        """Keep an idle connection alive (answer heartbeats); raise if it is gone."""

    def _poll_acks(self, timeout: float) -> None:
        """Async transports: serve delivery reports for up to `timeout` seconds."""

    def _close_transport(self, timeout: float) -> None:
        """Last chance to push out in-flight data, within `timeout` seconds, before the
        connection is dropped; what the client library still holds must be reported
        (_nack / _requeue) or is counted as dropped."""
