"""--mode bpf: kernel events drive targeted inet_diag reads.

One thread runs the loop: ring buffer events -> Tracker -> Lookups (exact lookups, or
one filtered dump per namespace when many opens land together) -> OPEN records; BPF
close events and destroy broadcasts -> CloseReconciler -> one CLOSE record per socket.
Live namespaces get a REFRESH dump every poll_frequency, every namespace a RESYNC at
resync_frequency and whenever a drop was counted (ring buffer reservation failure,
destroy ENOBUFS). Everything a step produces goes to the sink in one batch (Stage).
"""
from __future__ import annotations

import contextlib
import logging
import select
import threading
import time

from ..config import Config
from ..ebpf import tcp_events as E
from ..ebpf import loader
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..netlink.destroy import DestroyWatcher
from ..tcp_metrics import TCP
from .base import Parts
from .bpf_closes import CloseReconciler
from .bpf_drain import RingDrain
from .bpf_lookups import Lookups
from .bpf_metrics import BPF_BROADCASTS_FILTERED, BPF_DROPS, BPF_ERRORS, BPF_EVENTS, BPF_PENDING, BPF_RESYNCS
from .bpf_namespaces import NamespaceResolver
from .bpf_stage import Stage
from .tracker import Tracker

log = logging.getLogger(__name__)
T = pb.XtcpFlatRecord

# records per ring buffer read: each read is copied out, and the tracker copies the
# state events once more, so a read of 65,536 records (232 bytes each) held ~45 MiB
# at once after a backlog; 4,096 hold under 3 MiB. More reads per step keep a flood's
# throughput (the drain below reads while the loop is busy).
READ_MAX = 4096
RING_READS = 16   # reads per step at most: timers and broadcasts must not starve under a flood
ARM_STEP_S = 0.05  # a step this long (or an eighth of the ring waiting) arms the drain during steps
ARM_FOR_S = 2.0


class BpfMode:
    name = "bpf"

    def __init__(self, config: Config, parts: Parts,
                 coalesce_threshold: int = 16, load_options: loader.LoadOptions | None = None,
                 use_destroy_groups: bool = True, min_step: float = 0.01,
                 program: loader.BpfProgram | None = None) -> None:
        self.config = config
        self.table = parts.table
        self.collector = parts.collector
        self.learn_owners = parts.learn_owners
        self.use_destroy_groups = use_destroy_groups
        # Every step has a fixed cost (decode + encode ~ms whatever the row count): under
        # churn, steps at most every min_step so batches grow instead of steps multiplying.
        self.min_step = min_step
        self.ready = threading.Event()  # set once the start-up resync is done
        self._errors = 0
        self.tracker = Tracker(window=config.bpf_coalesce_window, close_wait=config.bpf_close_wait)
        self.load_options = load_options or loader.LoadOptions(ringbuf_bytes=config.bpf_ringbuf_bytes)
        self.bp: loader.BpfProgram | None = program   # already loaded (the --mode probe's), else start() loads
        self.watcher = DestroyWatcher()
        self.stats = {"open": 0, "close_destroy": 0, "close_bpf": 0, "refresh": 0, "resync": 0}
        self.stage = Stage(parts.sink)
        self.resolver = NamespaceResolver(self.table)
        self.closes = CloseReconciler(self.table, self.resolver, self.tracker, self.watcher, self.stage, self.stats)
        self.lookups = Lookups(config, self.resolver, self.tracker, self.stage, self.stats, coalesce_threshold)
        self.drain: RingDrain | None = None  # exists while run() runs
        self._started = False
        self._drops_seen = 0
        self._filtered_seen = 0
        self._resync_reason = ""
        self._next: dict[str, float] = {}

    # ---- Mode --------------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Apply a new validated config (deserializers at once, frequencies from the next timer)."""
        if config.netns != self.config.netns:
            self.table.names = list(config.netns)
            self.request_reconcile()
        self.config = config
        self.lookups.configure(config)
        if self._next:
            self._set_periods()
            now = time.monotonic()
            self._next["refresh"] = min(self._next["refresh"], now + (self._refresh_every or config.poll_frequency))
            self._next["resync"] = min(self._next["resync"], now + self._resync_every)

    def trigger(self, count: int = 1) -> None:
        """A full resync now (the gRPC poll trigger), from any thread."""
        if count:
            self.request_resync()

    def start(self) -> str:
        """Load and attach; raises Xtcp2Error with the reason if BPF cannot run."""
        if self.bp is None:
            self.bp = loader.load(self.load_options)
        if self.tracker.close_wait == 0:
            # BPF close records go out first: their broadcasts are dropped in the kernel
            self.watcher.filter_fd = self.bp.filter_fd
        how = self.bp.attach_kind
        if self.bp.fallback_reason:
            how += f" (tp_btf unavailable: {self.bp.fallback_reason})"
        self._drops_seen = self.bp.drop_counts()[0]
        self._started = True
        return how

    def close(self) -> None:
        self.watcher.close()
        if self.bp is not None:
            self.bp.close()
            self.bp = None

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        if not self._started:
            self.start()
        self.drain = RingDrain(self.bp.reader)
        self.lookups.busy = self.drain.busy
        try:
            self._run(stop, max_seconds)
        finally:
            self.lookups.busy = contextlib.nullcontext
            self.drain.close()
            self.drain = None

    def _run(self, stop: threading.Event, max_seconds: float | None) -> None:
        self._set_periods()
        self._reconcile()
        self._resync("start")
        self.ready.set()
        now = time.monotonic()
        self._next = {"refresh": now + (self._refresh_every or self.config.poll_frequency),
                      "resync": now + self._resync_every, "drops": now + 0.1}
        end = now + max_seconds if max_seconds else None
        ep = select.epoll()
        ep.register(self.bp.reader.fileno(), select.EPOLLIN)
        ep.register(self.watcher.fileno(), select.EPOLLIN)
        reader = self.bp.reader
        try:
            while not stop.is_set():
                now = time.monotonic()
                if end and now >= end:
                    break
                if not self.drain.backlog() and not reader.wait(0):  # fences, then re-checks: no lost wakeup
                    ep.poll(max(0.0, min(self._next_deadline(now) - now, 0.25)))
                started = time.monotonic()
                try:
                    with self.drain.busy(force=False):
                        worked = self.step()
                        self._timers()
                    if time.monotonic() - started > ARM_STEP_S or reader.pending_bytes() > reader.size // 8:
                        self.drain.arm(ARM_FOR_S)  # under load: keep the ring drained during steps too
                except Exception as e:  # a bug or a surprise from the kernel must not stop collection
                    BPF_ERRORS.inc()
                    self._errors += 1
                    if self._errors <= 10 or self._errors % 1000 == 0:
                        log.exception("bpf step failed (%d so far): %s; resyncing", self._errors, e)
                    self.stage.clear()
                    self._resync_reason = self._resync_reason or "error"
                    worked = 1
                    stop.wait(0.5)
                if worked and self.min_step > 0:
                    stop.wait(max(0.0, started + self.min_step - time.monotonic()))
        finally:
            ep.close()
            try:
                self.flush_all()
            except Exception as e:
                log.warning("bpf: final flush failed: %s", e)

    # ---- one iteration -------------------------------------------------------------------
    def step(self, force: bool = False) -> int:
        """Read events and broadcasts, do due lookups and closes. Returns records staged (before -modulus)."""
        drained = self._read_ring(time.monotonic())
        if self.tracker.netns_seen:
            self.tracker.netns_seen.clear()
            t = time.monotonic()
            # `ip netns add` unshares before it bind-mounts the name: look again shortly after
            self.resolver.reconcile_at += [t, t + 0.3]
        staged, lost = self.closes.step(drained, force)
        if lost:
            self._resync_reason = self._resync_reason or "destroy_enobufs"
        staged += self.lookups.run_due(time.monotonic(), force)
        BPF_PENDING.set(self.tracker.pending() + self.closes.pending())
        self.stage.flush()
        return staged

    def _read_ring(self, now: float) -> bool:
        """Feed ring buffer events to the tracker; True if the ring was read to its end."""
        reader = self.drain if self.drain is not None else self.bp.reader
        drained = False
        for _ in range(RING_READS):
            rec = reader.read(READ_MAX)
            # a record still being written (another CPU, microseconds) is left for the
            # next step rather than spinning on it: whatever was committed before it is read
            drained = len(rec) < READ_MAX
            if not len(rec):
                break
            ev = rec["ev"]
            BPF_EVENTS.labels("state").inc(int((ev["kind"] == E.EV_STATE).sum()))
            BPF_EVENTS.labels("netns").inc(int((ev["kind"] == E.EV_NETNS).sum()))
            self.tracker.ingest(ev, now)
            if self.learn_owners is not None:
                # owners taken in connect()/listen(): the join asks for them when these
                # sockets' first records miss its cache
                owned = ev[((ev["flags"] & E.F_OWNER) != 0) & (ev["kind"] == E.EV_STATE)]
                if len(owned):
                    self.learn_owners(owned["cookie"], owned["pid"], owned["comm"])
            if drained:
                break
        return drained

    def flush_all(self) -> None:
        """Emit everything pending now (shutdown, tests)."""
        if self.bp is not None:
            self.step(force=True)
        self.stage.sink.flush()

    # ---- timers ------------------------------------------------------------------------
    def _set_periods(self) -> None:
        cfg = self.config
        # 0 = no periodic refresh of live sockets (events and resyncs only); None: poll_frequency
        rf = cfg.bpf_refresh_frequency
        self._refresh_every = cfg.poll_frequency if rf is None else rf
        self._resync_every = cfg.resync_frequency or 10 * cfg.poll_frequency

    def _next_deadline(self, now: float) -> float:
        deadlines = list(self._next.values()) + self.resolver.reconcile_at + self.closes.deadlines()
        d = self.tracker.next_deadline()
        if d is not None:
            deadlines.append(d)
        if self.closes.holding():  # broadcasts wait for one more ring drain
            deadlines.append(now + self.min_step)
        return min(deadlines)

    def _timers(self) -> None:
        now = time.monotonic()
        nxt = self._next
        freq = self.config.poll_frequency
        if now >= nxt["drops"]:
            self._check_drops()
            nxt["drops"] = now + 0.1
        if self.resolver.due(now):
            self._reconcile()
        if self._resync_reason or now >= nxt["resync"]:
            self._resync(self._resync_reason or "timer")
            nxt["resync"] = time.monotonic() + self._resync_every
            nxt["refresh"] = time.monotonic() + (self._refresh_every or freq)
        elif now >= nxt["refresh"]:
            # namespaces that vanished must not stay pinned by our sockets until the resync
            self._reconcile()
            if self._refresh_every > 0:
                self._refresh()
            nxt["refresh"] = time.monotonic() + (self._refresh_every or freq)

    # ---- namespaces, refresh, resync ------------------------------------------------------------
    def request_resync(self) -> None:
        """Ask the loop (from any thread) for a full resync now."""
        self._resync_reason = self._resync_reason or "requested"

    def request_reconcile(self) -> None:
        """Ask the loop (from any thread) to re-discover namespaces now."""
        self.resolver.reconcile_at.append(time.monotonic())

    def reconcile(self) -> None:
        self._reconcile()

    def _busy(self):
        """While the loop is held by a dump or a namespace scan, the ring is drained aside."""
        return self.drain.busy() if self.drain is not None else contextlib.nullcontext()

    def _reconcile(self) -> None:
        with self._busy():
            self.table.reconcile()
            self.resolver.reconciled()
            self.watcher.sync_with(self.table, subscribe=self.use_destroy_groups)

    def _check_drops(self) -> None:
        filtered = self.bp.broadcasts_filtered()
        if filtered > self._filtered_seen:
            BPF_BROADCASTS_FILTERED.inc(filtered - self._filtered_seen)
            self._filtered_seen = filtered
        fails, _ = self.bp.drop_counts()
        if fails > self._drops_seen:
            BPF_DROPS.inc(fails - self._drops_seen)
            self._drops_seen = fails
            self._resync_reason = self._resync_reason or "ringbuf_drops"

    def _resync(self, reason: str) -> None:
        """Full dump of every namespace: after a drop nothing else can be trusted."""
        BPF_RESYNCS.labels(reason).inc()
        if reason != "start":
            log.info("bpf: resync (%s)", reason)
        self._resync_reason = ""
        self._reconcile()
        with self._busy():
            stats = self.collector.poll(None, trigger=T.TRIGGER_RESYNC)
        self.stats["resync"] += stats.records
        self.lookups.host_sockets = stats.sockets
        by_name = {ns.name: ns.inode for ns in self.table.namespaces()}
        self.tracker.reset_live({by_name[name]: k for name, k in stats.per_ns.items() if name in by_name})

    def _refresh(self) -> None:
        live = self.tracker.live_namespaces()
        changed = TCP.changed_namespaces()  # their socket gauges follow, even with no live socket left
        nss = [ns for ns in self.table.namespaces() if ns.inode in live or ns.name in changed]
        if nss:
            with self._busy():
                stats = self.collector.poll(nss, trigger=T.TRIGGER_REFRESH)
            self.stats["refresh"] += stats.records
