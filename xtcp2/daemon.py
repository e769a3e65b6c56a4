"""Wires the pipeline and runs it: namespaces -> collector -> emitter, on a schedule.

The Daemon is also the control surface other components use: the gRPC API calls
reconfigure() / trigger_poll() and subscribes to records with add_listener().
"""
from __future__ import annotations

import logging
import random
import threading
import time
from typing import Callable

from .collect import PollCollector, PollStats
from .config import Config
from .netns.registry import NamespaceTable
from .pipeline import Emitter, Listener

log = logging.getLogger(__name__)


class Daemon:
    def __init__(self, config: Config, use_bpf: bool = False) -> None:
        config.validate()
        self._config = config
        self.table = NamespaceTable(config.netns, config.packet_size, config.nl_timeout_milliseconds,
                                    config.populate_nsid)
        self.emitter = Emitter(config)
        self.collector = PollCollector(config, self.table, self.emitter)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pending_polls = 0
        self._lock = threading.Lock()
        self.loops = 0
        self.last_stats: PollStats | None = None
        self._last_reconcile = 0.0
        self._poll_hooks: list[Callable[[PollStats], None]] = []
        self.bpf = None
        self.closes = None
        if not use_bpf:  # poll mode gains close records from the sock_diag destroy groups
            from .netlink.destroy import CloseRecordPump
            self.closes = CloseRecordPump(self.table, self._emit_closes, self.collector.base_constants)
        if use_bpf:
            from .ebpf import BpfCollector
            self.bpf = BpfCollector(config, self.table, self.emitter, self.collector)
            log.info("bpf programs attached (%s)", self.bpf.start())

    # ---- control surface -------------------------------------------------------
    @property
    def config(self) -> Config:
        return self._config

    def reconfigure(self, new: Config) -> None:
        """Apply a validated config; it takes effect from the next poll."""
        new.validate()
        with self._lock:
            self.emitter.configure(new)
            self.collector.configure(new)
            if self.bpf is not None:
                self.bpf.configure(new)
            if new.netns != self._config.netns:
                self.table.names = list(new.netns)
                self._last_reconcile = 0.0
            self._config = new
        self._wake.set()  # a new frequency applies now, not after the old interval
        log.info("configuration updated")

    def trigger_poll(self, count: int = 1) -> None:
        if self.bpf is not None:
            self.bpf.request_resync()
            return
        with self._lock:
            self._pending_polls += count
        self._wake.set()

    def add_listener(self, fn: Listener) -> None:
        self.emitter.add_listener(fn)

    def remove_listener(self, fn: Listener) -> None:
        self.emitter.remove_listener(fn)

    def add_poll_hook(self, fn: Callable[[PollStats], None]) -> None:
        self._poll_hooks.append(fn)

    # ---- running -----------------------------------------------------------------
    def _emit_closes(self, cols, n: int, consts: dict) -> None:
        from .records.encode import encode_rows
        body, ends = encode_rows(cols, n, consts)
        self.emitter.add_rows(body, ends)
        self.emitter.flush()

    def reconcile(self) -> None:
        added, removed = self.table.reconcile()
        if self.closes is not None:
            self.closes.sync()
        self._last_reconcile = time.monotonic()
        if added or removed:
            log.info("namespaces: +%d -%d, watching %d", added, removed, len(self.table.by_key))

    def poll_once(self) -> PollStats:
        cfg = self._config
        if cfg.reconcile_before_poll or not self._last_reconcile or (
                cfg.reconcile_frequency and time.monotonic() - self._last_reconcile >= cfg.reconcile_frequency):
            self.reconcile()
        stats = self.collector.poll()
        self.loops += 1
        self.last_stats = stats
        for fn in self._poll_hooks:
            try:
                fn(stats)
            except Exception as e:
                log.warning("poll hook failed: %s", e)
        return stats

    def _interval(self) -> float:
        cfg = self._config
        jitter = cfg.poll_frequency * cfg.poll_jitter_pct / 100.0
        return max(0.0, cfg.poll_frequency + random.uniform(-jitter, jitter))

    def run(self) -> None:
        """Poll until stop() or -maxLoops polls; in bpf mode, follow kernel events until stop()."""
        if self.bpf is not None:
            self.bpf.run(self._stop)
            return
        cfg = self._config
        if cfg.poll_jitter_pct:
            # spread a fleet that starts together
            self._stop.wait(random.uniform(0, cfg.poll_frequency * cfg.poll_jitter_pct / 100.0))
        next_due = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            with self._lock:
                forced = self._pending_polls > 0
                if forced:
                    self._pending_polls -= 1
            if forced or now >= next_due:
                stats = self.poll_once()
                log.info("poll %d: %s", self.loops, stats.summary())
                if not forced:
                    next_due = max(next_due + self._interval(), time.monotonic())
                if self._config.max_loops and self.loops >= self._config.max_loops:
                    break
                continue
            wait = max(0.0, next_due - now)
            if self.closes is None:
                self._wake.wait(timeout=wait)
            else:
                end = time.monotonic() + wait
                while not self._wake.is_set() and time.monotonic() < end:
                    if self.closes.pump(min(0.1, max(0.0, end - time.monotonic()))):
                        self.trigger_poll()  # broadcasts were lost: a poll catches up
            if self._wake.is_set():
                self._wake.clear()
                # a reconfigured frequency restarts the interval from now
                next_due = min(next_due, time.monotonic() + self._interval())

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def close(self) -> None:
        if self.bpf is not None:
            self.bpf.close()
        if self.closes is not None:
            self.closes.close()
        self.collector.close()
        self.emitter.close()
        self.table.close()
