"""--mode bpf: kernel events drive targeted inet_diag reads.

One thread runs the loop: ring buffer events -> Tracker -> exact lookups (or one
filtered dump per namespace when many opens land together) -> OPEN records; BPF
close events -> CLOSE records at once (the program read every tcp_info field at
TCP_CLOSE); destroy broadcasts -> CLOSE records only for sockets whose BPF event was
lost or that never changed state (close_wait > 0 prefers broadcasts instead, waiting
that long for each). Live namespaces get
a REFRESH dump every poll_frequency, every namespace a RESYNC at resync_frequency
and whenever a drop was counted (ring buffer reservation failure, destroy ENOBUFS).
"""
from __future__ import annotations

import logging
import select
import threading
import time

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

from .. import SCHEMA_VERSION, __version__, metrics
from ..config import Config
from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..netlink import constants as c
from ..netlink.decode import Columns, decode_messages
from ..netlink.destroy import DestroyWatcher
from ..netlink.diag import DumpAborted, NetlinkError, SockId, new_chunk
from ..records.encode import encode_rows, take_rows
from . import tcp_events as E
from . import loader
from .batch import merge
from .records import close_columns
from .tracker import Tracker

log = logging.getLogger(__name__)
T = pb.XtcpFlatRecord

BPF_EVENTS = Counter("xtcp2_bpf_events_total", "Events read from the BPF ring buffer", ["kind"])
BPF_DROPS = Counter("xtcp2_bpf_ringbuf_drops_total", "BPF ring buffer reservation failures (events lost in the kernel)")
BPF_LOOKUPS = Counter("xtcp2_bpf_lookups_total",
                      "Targeted inet_diag reads after open events: found, gone (closed before the read), "
                      "no_namespace (namespace could not be entered), error", ["result"])
BPF_COALESCED = Counter("xtcp2_bpf_coalesced_dumps_total", "Per-namespace filtered dumps replacing many lookups")
BPF_CLOSES = Counter("xtcp2_bpf_close_records_total",
                     "Close records by source: destroy (sock_diag broadcast), bpf (in-kernel counters); not reported: "
                     "not_watched (namespace excluded by --netns), destroy_late (broadcast of a socket already reported), "
                     "no_cookie_broadcast (classic tracepoint: the broadcast is the record)", ["source"])
BPF_BROADCASTS_FILTERED = Counter("xtcp2_bpf_destroy_broadcasts_filtered_total",
                                  "Destroy broadcasts dropped in the kernel: their socket's close was in the ring buffer")
BPF_RESYNCS = Counter("xtcp2_bpf_resyncs_total", "Full resyncs by reason", ["reason"])
BPF_ERRORS = Counter("xtcp2_bpf_errors_total", "Collector steps that failed unexpectedly (followed by a resync)")
BPF_PENDING = Gauge("xtcp2_bpf_pending_events", "Events waiting for a lookup or for their destroy broadcast")
BPF_LATENCY = Histogram("xtcp2_bpf_event_to_record_seconds",
                        "Kernel event to record delivered by the emitter (sampled), by record source: "
                        "open (lookup), close_destroy (broadcast), close_bpf (in-kernel counters)", ["source"],
                        buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5))

READ_MAX = 65536  # records per ring buffer read
NEW_NETNS_WAIT = 1.0  # s a close waits for its new namespace to be discovered (its name is mounted)
_SOURCES = {"open": 0, "close_destroy": 1, "close_bpf": 2}
_LOOKUP_STATES = c.ALL_STATES & ~((1 << 6) | (1 << 3) | (1 << 12))  # no TIME_WAIT / SYN_RECV mini sockets


def available() -> tuple[bool, str]:
    """(True, how) if the BPF programs load and attach here, else (False, actionable reason)."""
    return loader.available()


class BpfCollector:
    """Runs --mode bpf on top of the poll pipeline's namespace table, collector and emitter."""

    def __init__(self, config: Config, table, emitter, poller,
                 coalesce_threshold: int = 16, load_options: loader.LoadOptions | None = None,
                 use_destroy_groups: bool = True, min_step: float = 0.01) -> None:
        self.config = config
        self.table = table
        self.emitter = emitter
        self.poller = poller
        self.coalesce_threshold = coalesce_threshold
        self.use_destroy_groups = use_destroy_groups
        # Every step has a fixed cost (decode + encode ~ms whatever the row count): under
        # churn, steps at most every min_step so batches grow instead of steps multiplying.
        self.min_step = min_step
        self._unresolved: dict[int, float] = {}   # netns inode -> do not look again before
        self._resolving: set[int] = set()
        self.ready = threading.Event()  # set once the start-up resync is done
        self._errors = 0
        self._host_sockets = 0          # sockets seen by the last resync, all namespaces
        self.tracker = Tracker(window=config.bpf_coalesce_window, close_wait=config.bpf_close_wait)
        self.load_options = load_options or loader.LoadOptions(ringbuf_bytes=config.bpf_ringbuf_bytes)
        self.bp: loader.BpfProgram | None = None
        self.watcher = DestroyWatcher()
        self._chunk = new_chunk(4 << 20)
        self._ktimes: np.ndarray | None = None
        self._stage: list = []          # (columns, n, consts) waiting for _flush_stage
        self._held: list = []           # destroy broadcasts waiting for the ring to be drained
        self._closes_waiting: dict[int, tuple[float, list]] = {}  # netns inode -> (until, close events)
        self._stage_ktimes: list = []
        self._counter = 0
        self._drops_seen = 0
        self._filtered_seen = 0
        self._resync_reason = ""
        self._reconcile_at: list[float] = []
        self._last_reconcile = 0.0
        self.latencies = np.zeros(1 << 16, np.float64)  # recent event->record latencies (seconds), a ring
        self.latency_source = np.zeros(1 << 16, np.uint8)  # _SOURCES of each latency
        self.latency_count = 0
        self.stats = {"open": 0, "close_destroy": 0, "close_bpf": 0, "refresh": 0, "resync": 0}
        self._ext = c.ext_mask(config.enabled_deserializers)
        self._wanted = c.wanted_attrs(config.enabled_deserializers)

    # ---- lifecycle ---------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        """Apply a new validated config (record metadata and deserializers at once,
        frequencies from the next timer)."""
        self.config = config
        self._ext = c.ext_mask(config.enabled_deserializers)
        self._wanted = c.wanted_attrs(config.enabled_deserializers)
        if hasattr(self, "_next"):
            rf = config.bpf_refresh_frequency
            self._refresh_every = config.poll_frequency if rf is None else rf
            self._resync_every = config.resync_frequency or 10 * config.poll_frequency
            now = time.monotonic()
            self._next["refresh"] = min(self._next["refresh"], now + (self._refresh_every or config.poll_frequency))
            self._next["resync"] = min(self._next["resync"], now + self._resync_every)

    def start(self) -> str:
        """Load and attach; raises Xtcp2Error with the reason if BPF cannot run."""
        self.bp = loader.load(self.load_options)
        if self.tracker.close_wait == 0:
            # BPF close records go out first: their broadcasts are dropped in the kernel
            self.watcher.filter_fd = self.bp.filter_fd
        how = self.bp.attach_kind
        if self.bp.fallback_reason:
            how += f" (tp_btf unavailable: {self.bp.fallback_reason})"
        self._drops_seen = self.bp.drop_counts()[0]
        return how

    def close(self) -> None:
        self.watcher.close()
        if self.bp is not None:
            self.bp.close()
            self.bp = None

    def run(self, stop: threading.Event, max_seconds: float | None = None) -> None:
        if self.bp is None:
            self.start()
        cfg = self.config
        # 0 = no periodic refresh of live sockets (events and resyncs only)
        rf = cfg.bpf_refresh_frequency   # None: poll_frequency
        self._refresh_every = cfg.poll_frequency if rf is None else rf
        self._resync_every = cfg.resync_frequency or 10 * cfg.poll_frequency
        self._reconcile()
        self._resync("start")
        self.ready.set()
        now = time.monotonic()
        self._next = {"refresh": now + (self._refresh_every or cfg.poll_frequency),
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
                deadlines = list(self._next.values()) + self._reconcile_at
                d = self.tracker.next_deadline()
                if d is not None:
                    deadlines.append(d)
                deadlines += [due for due, _ in self._closes_waiting.values()]
                if self._held:  # broadcasts wait for one more ring drain
                    deadlines.append(now + self.min_step)
                timeout = max(0.0, min(min(deadlines) - now, 0.25))
                if not reader.wait(0):  # fences, then re-checks: no lost wakeup
                    ep.poll(timeout)
                started = time.monotonic()
                try:
                    worked = self.step()
                    self._timers()
                except Exception as e:  # a bug or a surprise from the kernel must not stop collection
                    BPF_ERRORS.inc()
                    self._errors += 1
                    if self._errors <= 10 or self._errors % 1000 == 0:
                        log.exception("bpf step failed (%d so far): %s; resyncing", self._errors, e)
                    self._stage, self._stage_ktimes = [], []
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

    def _timers(self) -> None:
        now = time.monotonic()
        nxt = self._next
        freq = self.config.poll_frequency
        if now >= nxt["drops"]:
            self._check_drops()
            nxt["drops"] = now + 0.1
        if self._reconcile_at and now >= min(self._reconcile_at):
            self._reconcile_at = [t for t in self._reconcile_at if t > now]
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

    # ---- one iteration -------------------------------------------------------------------
    def step(self, force: bool = False) -> int:
        """Read events and broadcasts, do due lookups and closes. Returns records emitted."""
        now = time.monotonic()
        emitted = 0
        reader = self.bp.reader
        drained = False
        for _ in range(8):  # bounded: timers and broadcasts must not starve under a flood
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
            if drained:
                break
        if self.tracker.netns_seen:
            self.tracker.netns_seen.clear()
            t = time.monotonic()
            # `ip netns add` unshares before it bind-mounts the name: look again shortly after
            self._reconcile_at += [t, t + 0.3]
        ev = self.tracker.due_closes(time.monotonic(), force)
        if len(ev):
            emitted += self._emit_bpf_closes(ev, force)
        if self._closes_waiting:
            emitted += self._emit_bpf_closes(self._closes_resolved(force), force=True)
        # A broadcast is sent after its socket's TCP_CLOSE event was committed. One read
        # before this step's ring drain found no close record for these sockets: unless
        # the ring lost their events, the drain above has reported them by now.
        if drained or force:
            emitted += self._emit_held()
        for _ in range(4):  # one multicast message per recv: drain harder than the ring
            # sockets already reported (nearly all of them) are skipped before decoding
            got = self.watcher.poll(0, keep=self._not_reported)
            for key, cols, overrun in got:
                if overrun:
                    self._resync_reason = self._resync_reason or "destroy_enobufs"
                if cols["_n"]:
                    self._held.append((key, cols))
            if not got:
                break
        if force:
            emitted += self._emit_held()
        for ino, ev in self.tracker.due_opens(now, force):
            emitted += self._lookup(ino, ev, now)
        BPF_PENDING.set(self.tracker.pending() + sum(len(p) for _, ps in self._closes_waiting.values() for p in ps))
        self._flush_stage()
        return emitted

    def flush_all(self) -> None:
        """Emit everything pending now (shutdown, tests)."""
        if self.bp is not None:
            self.step(force=True)
        self.emitter.flush()

    # ---- records -------------------------------------------------------------------------
    def _consts(self, ns, ino: int, trigger: int) -> dict:
        cfg = self.config
        out = {"schema_version": SCHEMA_VERSION, "daemon_version": __version__, "hostname": cfg.hostname,
               "location": cfg.location, "label": cfg.label, "tag": cfg.tag, "trigger": trigger,
               "timestamp_ns": time.time_ns(), "netns_inode": ino}
        if ns is not None:
            out.update(netns=ns.name, nsid=ns.nsid, socket_fd=ns.diag.fileno())
        else:
            out["netns"] = f"inode:{ino}"
        return out

    def _emit(self, cols: Columns, consts: dict, ktimes: np.ndarray | None = None, source: str = "open") -> int:
        """Stage records; step() encodes everything staged in one call (_flush_stage)."""
        n = cols.pop("_n", None)
        if n is None:
            n = len(next(iter(cols.values())))
        if n == 0:
            return 0
        self._stage.append((cols, n, consts))
        if ktimes is not None and len(ktimes):
            self._stage_ktimes.append((source, ktimes))
        return n

    def _flush_stage(self) -> int:
        if not self._stage:
            return 0
        parts, self._stage = self._stage, []
        kts, self._stage_ktimes = self._stage_ktimes, []
        cols, n, consts = merge(parts)
        # one record_counter sequence with the poll collector (resync/refresh records)
        nxt = self.poller.next_counters
        start = nxt(n) if nxt is not None else self._counter
        self._counter = start + n
        cols["record_counter"] = np.arange(start + 1, start + 1 + n, dtype=np.uint64)
        body, ends = encode_rows(cols, n, consts)
        self.emitter.add_rows(body, ends)
        self.emitter.flush()
        metrics.RECORDS.inc(n)
        t = time.monotonic_ns()
        for source, kt in kts:
            lat = (t - kt.astype(np.int64)) / 1e9
            k = len(lat)
            for v in lat[::max(1, k // 16)].tolist():  # sampled: <= 16 observations per part
                BPF_LATENCY.labels(source).observe(max(0.0, v))
            idx = (self.latency_count + np.arange(k)) % len(self.latencies)
            self.latencies[idx] = lat
            self.latency_source[idx] = _SOURCES[source]
            self.latency_count += k
        return n

    def _emit_held(self) -> int:
        held, self._held = self._held, []
        return sum(self._emit_destroy(key, cols) for key, cols in held)

    def _not_reported(self, cookies: np.ndarray) -> np.ndarray:
        """Broadcasts worth decoding: sockets without a close record yet."""
        keep = self.tracker.not_final(cookies)
        dup = len(keep) - int(keep.sum())
        if dup:
            BPF_CLOSES.labels("destroy_late").inc(dup)
        return keep

    def _emit_destroy(self, key, cols: Columns) -> int:
        ns = self.table.by_key.get(key)
        ino = key[1] if isinstance(key, tuple) else 0
        ck = cols["inet_diag_msg_socket_cookie"]
        keep = self.tracker.not_final(ck)
        if not keep.all():
            BPF_CLOSES.labels("destroy_late").inc(int((~keep).sum()))
            cols = take_rows(cols, np.flatnonzero(keep))
            ck = cols["inet_diag_msg_socket_cookie"]
        n = cols["_n"]
        if not n:
            return 0
        self.tracker.final_emitted(ck, time.monotonic(), 1)
        BPF_CLOSES.labels("destroy").inc(n)
        self.stats["close_destroy"] += n
        kts = self.tracker.close_ktime
        kt = np.fromiter((kts.get(c, 0) for c in ck.tolist()), np.int64, n)
        return self._emit(dict(cols), self._consts(ns, ino, T.TRIGGER_CLOSE), kt[kt > 0], "close_destroy")

    def _emit_bpf_closes(self, ev: np.ndarray, force: bool = False) -> int:
        """Close records from BPF close events; force: now, even for unknown namespaces."""
        emitted = 0
        now = time.monotonic()
        for ino in np.unique(ev["netns_ino"]).tolist():
            part = ev[ev["netns_ino"] == ino]
            ns = self._namespace(ino)
            if ns is None and not force and (ino in self._resolving or ino in self._closes_waiting):
                # a namespace created a moment ago (`ip netns add` mounts its name after
                # the first sockets may already have closed): wait for discovery, briefly
                due, parts = self._closes_waiting.setdefault(ino, (now + NEW_NETNS_WAIT, []))
                parts.append(part)
                continue
            if ns is None and self.table.names:
                BPF_CLOSES.labels("not_watched").inc(len(part))  # --netns restricts what we report
                continue
            if ns is not None and (part["cookie"] == 0).any() and ns.ref.key in self.watcher.keys():
                # classic-tracepoint fallback: a close without a cookie cannot be matched
                # with its broadcast, and the broadcast (watched here) is the record
                nock = part["cookie"] == 0
                BPF_CLOSES.labels("no_cookie_broadcast").inc(int(nock.sum()))
                part = part[~nock]
                if not len(part):
                    continue
            cols = close_columns(part, self.tracker.last_known)
            BPF_CLOSES.labels("bpf").inc(len(part))
            self.stats["close_bpf"] += len(part)
            emitted += self._emit(cols, self._consts(ns, ino, T.TRIGGER_CLOSE), part["ktime_ns"], "close_bpf")
        return emitted

    def _closes_resolved(self, force: bool) -> np.ndarray:
        """Waiting closes whose namespace is known now or whose wait is over."""
        now = time.monotonic()
        ready = []
        for ino, (due, parts) in list(self._closes_waiting.items()):
            if force or due <= now or self.table.by_inode(ino) is not None:
                del self._closes_waiting[ino]
                ready.extend(parts)
        return np.concatenate(ready) if ready else np.empty(0, E.EVENT_DTYPE)

    # ---- targeted reads --------------------------------------------------------------------
    def _lookup(self, ino: int, ev: np.ndarray, now: float) -> int:
        ns = self._namespace(ino)
        if ns is None:
            if ino in self._resolving:
                self.tracker.requeue(ino, ev, time.monotonic() + 0.02)
            else:
                BPF_LOOKUPS.labels("no_namespace").inc(len(ev))
            return 0
        chunk = self._chunk
        chunk.reset()
        self._ktimes = ev["ktime_ns"]
        emitted = found = 0
        want = ev["cookie"]
        order = {k: i for i, k in enumerate(want.tolist())}
        try:
            with ns.lock:
                # without cookies (classic tracepoint) only exact 4-tuple lookups can match
                if len(ev) >= self._coalesce_at() and not (ev["cookie"] == 0).any():
                    BPF_COALESCED.inc()
                    for fam in np.unique(ev["family"]).tolist():
                        # the reader yields whenever the chunk fills: consume it before advancing
                        for ch in ns.diag.dump(fam, self._ext, chunk, states=_LOOKUP_STATES):
                            e, f = self._emit_lookup(ch, ns, ino, want, order)
                            emitted, found = emitted + e, found + f
                else:
                    for e in ev:
                        fam = int(e["family"])
                        alen = 16 if fam == c.AF_INET6 else 4
                        sid = SockId(int(e["sport"]), int(e["dport"]), bytes(e["saddr"][:alen]),
                                     bytes(e["daddr"][:alen]), cookie=int(e["cookie"]) or None)
                        # a callable source: replies of all lookups accumulate in one chunk
                        for _ in ns.diag.dump(fam, self._ext, lambda: chunk, sockid=sid):
                            pass
                    e, found = self._emit_lookup(chunk, ns, ino, want, order)
                    emitted += e
        except (DumpAborted, NetlinkError, OSError) as err:
            BPF_LOOKUPS.labels("error").inc(len(ev))
            log.warning("netns %s: targeted read failed: %s", ns.name, err)
            return emitted
        BPF_LOOKUPS.labels("found").inc(found)
        BPF_LOOKUPS.labels("gone").inc(max(0, len(ev) - found))
        return emitted

    def _coalesce_at(self) -> int:
        """Pending opens in one namespace above which one filtered dump beats exact lookups.

        A dump walks the host-wide TCP hash (~0.5 us per socket on the host, whatever
        the namespace); an exact lookup costs ~20 us. So with 100k sockets on the host,
        a dump only pays off beyond ~2,500 pending opens."""
        return max(self.coalesce_threshold, self._host_sockets // 40)

    def _emit_lookup(self, chunk, ns, ino: int, want: np.ndarray, order: dict) -> tuple[int, int]:
        """OPEN records for the sockets in `chunk` whose cookie is in `want`: (emitted, found)."""
        cols = decode_messages(chunk.buf, chunk.message_offsets(), self._wanted, used=chunk.used)
        n = cols["_n"]
        if not n:
            return 0, 0
        ck = cols["inet_diag_msg_socket_cookie"]
        if not want.all():  # cookie-less exact lookups: the kernel matched the 4-tuple
            keep = np.arange(n)
        else:
            keep = np.flatnonzero(np.isin(ck, want))
        if len(keep) != n:
            cols = take_rows(cols, keep)
            ck = cols["inet_diag_msg_socket_cookie"]
            n = cols["_n"]
        if not n:
            return 0, 0
        lk = self.tracker.last_known
        uid = cols.get("inet_diag_msg_uid", np.zeros(n, np.uint32)).tolist()
        inode = cols.get("inet_diag_msg_inode", np.zeros(n, np.uint32)).tolist()
        cks = ck.tolist()
        for k, u, i in zip(cks, uid, inode):
            lk[k] = (int(u), int(i))
        kt = (self._ktimes[[order[k] for k in cks if k in order]]
              if self._ktimes is not None and want.all() else None)
        self.stats["open"] += n
        return self._emit(cols, self._consts(ns, ino, T.TRIGGER_OPEN), kt), n

    # ---- namespaces, refresh, resync ------------------------------------------------------------
    def request_resync(self) -> None:
        """Ask the loop (from any thread) for a full resync now (e.g. the gRPC poll trigger)."""
        self._resync_reason = self._resync_reason or "requested"

    def request_reconcile(self) -> None:
        """Ask the loop (from any thread) to re-discover namespaces now."""
        self._reconcile_at.append(time.monotonic())

    def _namespace(self, ino: int):
        """The watched namespace with this inode; None while it is being looked for (the
        inode is then in _resolving) or if discovery does not list it (then remembered
        for a while, so events from namespaces we cannot or must not watch stay cheap)."""
        ns = self.table.by_inode(ino)
        if ns is not None or ino in self._resolving:
            return ns
        if self._unresolved.get(ino, 0.0) > time.monotonic():
            return None
        self._resolving.add(ino)
        self._reconcile_at.append(time.monotonic())
        return None

    def _reconcile(self) -> None:
        self._last_reconcile = time.monotonic()
        self.table.reconcile()
        for ino in self._resolving:
            if self.table.by_inode(ino) is None:
                self._unresolved[ino] = self._last_reconcile + 5.0
        self._resolving.clear()
        if len(self._unresolved) > 10000:
            self._unresolved.clear()
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
        stats = self.poller.poll(None, trigger=T.TRIGGER_RESYNC)
        self.stats["resync"] += stats.records
        self._host_sockets = stats.sockets
        by_name = {ns.name: ns.inode for ns in self.table.namespaces()}
        self.tracker.reset_live({by_name[name]: k for name, k in stats.per_ns.items() if name in by_name})

    def _refresh(self) -> None:
        live = self.tracker.live_namespaces()
        nss = [ns for ns in self.table.namespaces() if ns.inode in live]
        if nss:
            stats = self.poller.poll(nss, trigger=T.TRIGGER_REFRESH)
            self.stats["refresh"] += stats.records
