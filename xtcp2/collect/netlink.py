"""Collection through netlink inet_diag: each watched namespace (IPv4 and IPv6) -> Columns -> sink.

Per namespace and family the dump is read in large chunks; each chunk is decoded
column-wise and handed to the record sink (which encodes it) while the next chunk is
read, so memory stays bounded by a few chunks whatever the socket count.
Used by both modes: poll mode every -frequency, bpf mode for its refreshes and resyncs.
"""
from __future__ import annotations

import logging
import os
import queue
import threading
import time
from typing import Callable, Iterator

import numpy as np

from .. import metrics
from ..columns import Columns
from ..config import CHUNKS_PER_WORKER, Config, chunk_bytes
from ..memory import tune_malloc
from ..gen.xtcp_flat_record.v1.fields import TRIGGER
from ..netlink import constants as c
from ..netlink.decode import decode_messages
from ..netlink.diag import Chunk, DumpAborted, NetlinkError, new_chunk
from ..netlink.pcap import PcapWriter, capture_file_name
from ..netns.registry import NAMESPACE_ERRORS, Namespace, NamespaceTable
from ..records.sink import RecordSink
from ..tcp_metrics import TCP

log = logging.getLogger(__name__)
FAMILIES = ((c.AF_INET, "ipv4"), (c.AF_INET6, "ipv6"))


class PollStats:
    def __init__(self, namespaces: int = 0) -> None:
        self.namespaces = namespaces
        self.sockets = 0
        self.records = 0
        self.seconds = 0.0
        self.errors = 0
        self.interrupted = 0
        self.per_ns: dict = {}

    def __repr__(self) -> str:
        return f"PollStats({self.summary()})"

    def summary(self) -> str:
        return (f"namespaces={self.namespaces} sockets={self.sockets} records={self.records} "
                f"seconds={self.seconds:.3f}" + (f" errors={self.errors}" if self.errors else ""))


class SecondEmitter:
    """Emits (encodes) some chunks of one namespace on a second thread.

    The reader thread's kernel walk ends before the worker has encoded what it read:
    encoding is the longer half. A chunk goes to this thread when it is idle (at most
    one waits for it); otherwise the worker emits it itself, so the two split the
    chunks by speed and both cores work until the end (numpy's loops release the
    GIL). Rows of one namespace may then reach the emitter out of chunk order; each
    keeps its record_counter. close() waits for the thread, re-raises what it raised
    and returns the records it emitted."""

    def __init__(self, emit: Callable[[Columns, dict], int]) -> None:
        self._emit = emit
        self._q: queue.Queue = queue.Queue(maxsize=1)
        self._t: threading.Thread | None = None
        self._error: BaseException | None = None
        self.records = 0

    def submit(self, cols: Columns, consts: dict) -> bool:
        """True if this thread will emit the chunk; False: the caller emits it."""
        if self._t is None:
            self._t = threading.Thread(target=self._run, name=f"{threading.current_thread().name}-emit", daemon=True)
            self._t.start()
        try:
            self._q.put_nowait((cols, consts))
        except queue.Full:
            return False
        return True

    def _run(self) -> None:
        while (item := self._q.get()) is not None:
            try:
                self.records += self._emit(*item)
            except BaseException as e:  # raised again in the caller by close()
                self._error = self._error or e

    def close(self) -> int:
        if self._t is not None:
            self._q.put(None)
            self._t.join()
            self._t = None
        if self._error is not None:
            raise self._error
        return self.records


class NetlinkCollector:
    def __init__(self, config: Config, table: NamespaceTable, sink: RecordSink) -> None:
        self.table = table
        self.sink = sink
        self._local = threading.local()
        self._captured = 0
        self._pool = None   # a ThreadPoolExecutor of -netlinkers, made by the first poll of 2+ namespaces
        self.iter = None  # xtcp2.ebpf.tcp_iter.IterCollector when -collector picks the BPF iterator
        # set by stop(): a poll in progress gives up between chunks, queued namespaces are
        # skipped, so SIGTERM does not wait for a full pass over hundreds of namespaces
        self.stopping = threading.Event()
        # skip namespaces whose sockstat counts no TCP socket (benchmarks turn it off to compare)
        self.skip_empty = True
        self.parallel_emit = True   # a namespace's chunks encoded on two threads (SecondEmitter)
        self.config = None
        tune_malloc()
        self.configure(config)

    def configure(self, config: Config) -> None:
        if self.config is None or config.collector != self.config.collector:
            self._select_backend(config.collector)
        self.config = config
        self.ext = c.ext_mask(config.enabled_deserializers)
        self.wanted = c.wanted_attrs(config.enabled_deserializers)
        if self._pool is not None and self._pool._max_workers != config.netlinkers:
            old, self._pool = self._pool, self._new_pool(config.netlinkers)
            old.shutdown(wait=False)

    @staticmethod
    def _new_pool(workers: int):
        from concurrent.futures import ThreadPoolExecutor
        return ThreadPoolExecutor(workers, thread_name_prefix="netlinker")

    def _select_backend(self, collector: str) -> None:
        """-collector: the BPF iterator (iter), inet_diag (netlink), or iter where it loads (auto)."""
        if collector == "netlink":  # the iterator's modules (libbpf, its dtypes) are not even imported
            old, self.iter, why = self.iter, None, "collector netlink (inet_diag)"
        else:
            from .iter import select_backend
            old, (self.iter, why) = self.iter, select_backend(collector)
        if old is not None:
            old.close()
        log.info("%s", why)

    def stop(self) -> None:
        """From any thread: polls in progress end at their next chunk (the daemon is stopping)."""
        self.stopping.set()

    def _in_ns(self, ns: Namespace, fn):
        """fn() run inside ns (directly for the daemon's own namespace)."""
        if ns.ref.source == "self":
            return fn()
        return self.table.enter().run_in(ns.ref.path, fn)

    def _free_chunks(self) -> queue.SimpleQueue:
        """This worker's chunk buffers: one being read while another is decoded."""
        free = getattr(self._local, "free", None)
        size = chunk_bytes(self.config.packet_size)
        if free is None or getattr(self._local, "size", 0) != size:
            free = self._local.free = queue.SimpleQueue()
            self._local.size = size
            for _ in range(CHUNKS_PER_WORKER):
                free.put(new_chunk(size))
        return free

    def _dump(self, ns: Namespace, family: int):
        """Yield filled chunks of one dump; return each to the free queue after use.

        A dump that fits one chunk (nearly every namespace) is read inline. A bigger
        one continues on a reader thread, so the kernel fills the next chunk while
        this thread decodes and encodes the previous one: recv releases the GIL, and
        so do numpy's large loops.
        """
        free = self._free_chunks()

        def source() -> Chunk:
            ch = free.get()
            ch.reset()
            return ch

        gen = ns.diag.dump(family, self.ext, source)
        first = next(gen)
        if first.final:
            try:
                yield first
            finally:
                free.put(first)
            return
        full: queue.Queue = queue.Queue()

        def reader() -> None:
            try:
                for ch in gen:
                    full.put(ch)
                    if self.stopping.is_set() and not ch.final:
                        raise DumpAborted("stopped", "the daemon is stopping")
            except BaseException as e:  # handed to the consumer, raised there
                full.put(e)
            full.put(None)

        t = threading.Thread(target=reader, name=f"{threading.current_thread().name}-reader", daemon=True)
        t.start()
        try:
            try:
                yield first
            finally:
                free.put(first)  # also when the consumer aborts the dump at this yield
            while (item := full.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                try:
                    yield item
                finally:
                    free.put(item)
        finally:
            # drain so the reader never blocks forever on a full queue or free chunk
            while t.is_alive():
                try:
                    item = full.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, Chunk):
                    free.put(item)
            t.join()
            # what the reader queued just before it ended is not drained by the loop above
            while not full.empty():
                item = full.get_nowait()
                if isinstance(item, Chunk):
                    free.put(item)

    def poll(self, namespaces: list[Namespace] | None = None, trigger: int = TRIGGER["TRIGGER_POLL"]) -> PollStats:
        t0 = time.perf_counter()
        nss = self.table.namespaces() if namespaces is None else namespaces
        stats = PollStats(namespaces=len(nss))
        if len(nss) == 1 and self._pool is None:
            # one namespace, and never more so far (a one-shot run, a host with no containers):
            # polled on this thread, no pool. Once a pool exists every poll uses it, so one
            # namespace's big dumps never fill the chunk buffers of two threads.
            results = [(nss[0], self._poll_ns(nss[0], trigger))]
        else:
            if self._pool is None:
                self._pool = self._new_pool(self.config.netlinkers)
            futures = [(ns, self._pool.submit(self._poll_ns, ns, trigger)) for ns in nss]
            results = [(ns, fut.result()) for ns, fut in futures]
        for ns, (sockets, records, errors, interrupted) in results:
            stats.sockets += sockets
            stats.records += records
            stats.errors += errors
            stats.interrupted += interrupted
            stats.per_ns[ns.name] = sockets
        self.sink.flush()
        TCP.poll_done([ns.name for ns in nss], complete=namespaces is None)  # socket gauges: this poll's
        stats.seconds = time.perf_counter() - t0
        metrics.POLLS.inc()
        metrics.POLL_SECONDS.observe(stats.seconds)
        return stats

    def _worker_id(self) -> int:
        wid = getattr(self._local, "wid", None)
        if wid is None:
            name = threading.current_thread().name
            wid = self._local.wid = int(name.rsplit("_", 1)[-1]) if name.rsplit("_", 1)[-1].isdigit() else 0
        return wid

    def _poll_ns(self, ns: Namespace, trigger: int) -> tuple[int, int, int, int]:
        sockets = records = errors = interrupted = 0
        deadline = time.monotonic() + self.config.poll_timeout
        if self.stopping.is_set():
            return 0, 0, 0, 0
        with ns.lock:
            if ns.broken:
                return 0, 0, 0, 0
            consts = dict(netns=ns.name, netns_inode=ns.inode, nsid=ns.nsid,
                          netlinker_id=self._worker_id(), socket_fd=ns.diag.fileno(), trigger=trigger)
            if self.iter is not None and not self.config.capture_path:
                done = self._poll_ns_iter(ns, consts, deadline)
                if done is not None:
                    return done
            elif self.skip_empty and not self.config.capture_path and not self._has_sockets(ns):
                return 0, 0, 0, 0
            for family, fname in FAMILIES:
                writer = self._capture_writer(ns, family)
                ns.diag.capture = writer
                try:
                    for cols, ch in self.dump_columns(ns, family):
                        sockets += cols.n
                        records += self.sink.emit(cols, consts)
                        metrics.SOCKETS.labels(fname).inc(cols.n)
                        if ch.interrupted:
                            interrupted += 1
                            metrics.NETLINK_ERRORS.labels("interrupted").inc()
                        if not ch.final and time.monotonic() > deadline:
                            raise DumpAborted("poll_timeout", f"namespace took longer than -timeout {self.config.poll_timeout:g}s")
                        if not ch.final and self.stopping.is_set():
                            raise DumpAborted("stopped", "the daemon is stopping")
                except DumpAborted as e:
                    if e.kind == "stopped":
                        ns.broken = True  # replies may still be in flight; the socket is closed next
                        break
                    errors += 1
                    metrics.NETLINK_ERRORS.labels(e.kind).inc()
                    log.warning("netns %s %s dump aborted: %s", ns.name, fname, e)
                    if e.kind in ("timeout", "truncated", "error", "poll_timeout", "enobufs"):
                        ns.broken = True  # replies may still be in flight: reopen at reconcile
                        break
                except NetlinkError as e:
                    errors += 1
                    metrics.NETLINK_ERRORS.labels("error").inc()
                    log.warning("netns %s %s dump refused: %s", ns.name, fname, e)
                except OSError as e:
                    errors += 1
                    NAMESPACE_ERRORS.labels("vanished").inc()
                    log.warning("netns %s %s: %s; skipped", ns.name, fname, e)
                    ns.broken = True
                    break
                finally:
                    ns.diag.capture = None
                    if writer:
                        writer.close()
        return sockets, records, errors, interrupted

    def _has_sockets(self, ns: Namespace) -> bool:
        """False only when the namespace's sockstat counts no TCP socket: then a dump,
        which walks the host-wide hash table, would find nothing."""
        from ..netns.sockstat import has_tcp_sockets
        try:
            if self._in_ns(ns, has_tcp_sockets):
                return True
        except (OSError, ValueError, TimeoutError):
            return True  # cannot tell: dump as before
        metrics.NAMESPACES_SKIPPED.inc()
        return False

    def _poll_ns_iter(self, ns: Namespace, consts: dict, deadline: float) -> tuple[int, int, int, int] | None:
        """One namespace through the BPF iterator; None if it failed before emitting
        anything (the caller dumps it with inet_diag instead). A namespace of several
        chunks is emitted on two threads (see SecondEmitter)."""
        helper = SecondEmitter(self.sink.emit) if self.parallel_emit else None
        try:
            done = self._iter_chunks(ns, consts, deadline, helper)
        finally:
            extra = helper.close() if helper is not None else 0
        if done is None:
            return None
        sockets, records, errors, interrupted = done
        return sockets, records + extra, errors, interrupted

    def _iter_chunks(self, ns: Namespace, consts: dict, deadline: float,
                     helper: "SecondEmitter | None") -> tuple[int, int, int, int] | None:
        sockets = records = 0
        try:
            for cols in self.iter.columns(lambda fn: self._in_ns(ns, fn), self.wanted, self.skip_empty,
                                          on_skip=metrics.NAMESPACES_SKIPPED.inc):
                fam = cols["inet_diag_msg_family"]
                v6 = int(np.count_nonzero(fam == c.AF_INET6))
                metrics.SOCKETS.labels("ipv4").inc(cols.n - v6)
                metrics.SOCKETS.labels("ipv6").inc(v6)
                first = not sockets
                sockets += cols.n
                if first or helper is None or not helper.submit(cols, consts):
                    records += self.sink.emit(cols, consts)
                if self.stopping.is_set():
                    break
                if time.monotonic() > deadline:
                    metrics.ITER_ERRORS.inc()
                    log.warning("netns %s: BPF iterator read stopped after %d sockets: longer than -timeout %gs",
                                ns.name, sockets, self.config.poll_timeout)
                    return sockets, records, 1, 0
        except (OSError, TimeoutError) as e:
            metrics.ITER_ERRORS.inc()
            if sockets:
                log.warning("netns %s: BPF iterator failed after %d sockets: %s", ns.name, sockets, e)
                return sockets, records, 1, 0
            log.warning("netns %s: BPF iterator failed (%s); dumping with inet_diag", ns.name, e)
            return None
        return sockets, records, 0, 0

    def dump_columns(self, ns: Namespace, family: int) -> Iterator[tuple[Columns, Chunk]]:
        """Columns of one namespace's dump, chunk by chunk (with the chunk for its flags:
        interrupted, final). The caller holds ns.lock. The columns are copies: they stay
        valid after the chunk buffer is refilled."""
        for ch in self._dump(ns, family):
            yield decode_messages(ch.buf, ch.message_offsets(), self.wanted, used=ch.used), ch

    def _capture_writer(self, ns: Namespace, family: int) -> PcapWriter | None:
        cfg = self.config
        if not cfg.capture_path or self._captured >= max(cfg.write_files, 1):
            return None
        self._captured += 1
        try:
            os.makedirs(cfg.capture_path, exist_ok=True)
            return PcapWriter(capture_file_name(cfg.capture_path, ns.name, family))
        except OSError as e:
            log.warning("capture to %s disabled: %s", cfg.capture_path, e)
            self._captured = max(cfg.write_files, 1)
            return None

    def close(self) -> None:
        self.stopping.set()
        if self._pool:
            self._pool.shutdown(wait=True, cancel_futures=True)
        if self.iter is not None:
            self.iter.close()
            self.iter = None
