"""Poll mode: dump every watched namespace on a fixed time grid, close records in between.

-frequency is a period, not a pause: polls are due at t0, t0+f, t0+2f... whatever
each poll takes, as upstream's time.Ticker does it. A poll still running when ticks
come is followed at once by one poll for the latest of them; the others are skipped
(counted in xtcp2_poll_ticks_skipped_total), so polls never pile up behind a slow one
and the grid stays where it was. A triggered poll (gRPC) runs at once and leaves the
grid alone. -pollJitterPct moves each poll around its tick, never the grid.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

from .. import metrics
from ..collect import PollStats
from ..config import Config
from .base import Parts

log = logging.getLogger(__name__)

PUMP_SLICE = 0.1  # s: the longest a broadcast waits in the kernel while the mode waits for a tick


def _uniform(a: float, b: float) -> float:
    import random   # only a daemon's loop jitters: a one-shot run does not import it
    return random.uniform(a, b)


class PollMode:
    name = "poll"

    def __init__(self, config: Config, parts: Parts, close_records: bool = True) -> None:
        self.config = config
        self.parts = parts
        self.table = parts.table
        self.collector = parts.collector
        # close records come from the sock_diag destroy groups
        self.closes = None
        if close_records:
            from .closes import CloseRecordPump  # here: one-shot runs never watch closes
            self.closes = CloseRecordPump(parts.table, parts.sink)
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._pending = 0
        self._last_reconcile = 0.0
        self.loops = 0
        self.ticks_skipped = 0
        self.last_stats: PollStats | None = None
        self.hooks: list[Callable[[PollStats], None]] = []

    # ---- Mode --------------------------------------------------------------------------
    def configure(self, config: Config) -> None:
        with self._lock:
            if config.netns != self.config.netns:
                self.table.names = list(config.netns)
                self._last_reconcile = 0.0
            self.config = config
        self._wake.set()  # a new frequency applies now, not after the old period

    def trigger(self, count: int = 1) -> None:
        with self._lock:
            self._pending += count
        self._wake.set()

    def close(self) -> None:
        if self.closes is not None:
            self.closes.close()

    def run(self, stop: threading.Event) -> None:
        """Poll on the grid until `stop` or -maxLoops polls."""
        cfg = self.config
        if cfg.poll_jitter_pct:
            # spread a fleet that starts together
            stop.wait(_uniform(0, cfg.poll_frequency * cfg.poll_jitter_pct / 100.0))
        period = cfg.poll_frequency
        tick = time.monotonic()   # the grid point the next scheduled poll belongs to
        due = tick                # tick moved by jitter
        while not stop.is_set():
            with self._lock:
                forced = self._pending > 0
                if forced:
                    self._pending -= 1
            if forced or time.monotonic() >= due:
                started = time.monotonic()
                stats = self.poll_once()
                log.info("poll %d: %s", self.loops, stats.summary())
                if not forced:
                    now = time.monotonic()
                    tick = self._next_tick(tick, period, now, now - started)
                    due = tick + self._jitter()
                if self.config.max_loops and self.loops >= self.config.max_loops:
                    break
                continue
            self._wait(due - time.monotonic())
            if self._wake.is_set():
                self._wake.clear()
                if self.config.poll_frequency != period:
                    # a new frequency starts a new grid, at most one new period from now
                    period = self.config.poll_frequency
                    tick = min(tick, time.monotonic() + period)
                    due = tick + self._jitter()

    # ---- steps ---------------------------------------------------------------------------
    def _next_tick(self, tick: float, period: float, now: float, took: float) -> float:
        """The tick the next poll belongs to. If ticks passed while the poll of `tick`
        ran, the latest of them is due now and the ones before it are skipped."""
        passed = int((now - tick) // period)
        if passed <= 1:
            return tick + period
        skipped = passed - 1
        self.ticks_skipped += skipped
        metrics.POLL_TICKS_SKIPPED.inc(skipped)
        log.warning("poll %d took %.3fs, longer than -frequency %gs: %d scheduled poll(s) skipped",
                    self.loops, took, period, skipped)
        return tick + passed * period

    def _jitter(self) -> float:
        cfg = self.config
        j = cfg.poll_frequency * cfg.poll_jitter_pct / 100.0
        return _uniform(-j, j) if j else 0.0

    def _wait(self, seconds: float) -> None:
        """Wait for the next tick (or a wake-up), reading close records meanwhile."""
        if seconds <= 0:
            return
        if self.closes is None:
            self._wake.wait(timeout=seconds)
            return
        end = time.monotonic() + seconds
        while not self._wake.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return
            if self.closes.pump(min(PUMP_SLICE, left)):
                self.trigger()  # broadcasts were lost: a poll catches up

    def reconcile(self) -> None:
        added, removed = self.table.reconcile()
        if self.closes is not None:
            self.closes.sync()
        self._last_reconcile = time.monotonic()
        if added or removed:
            log.info("namespaces: +%d -%d, watching %d", added, removed, len(self.table.by_key))

    def poll_once(self) -> PollStats:
        cfg = self.config
        if cfg.reconcile_before_poll or not self._last_reconcile or (
                cfg.reconcile_frequency and time.monotonic() - self._last_reconcile >= cfg.reconcile_frequency):
            self.reconcile()
        stats = self.collector.poll()
        self.loops += 1
        self.last_stats = stats
        for fn in self.hooks:
            try:
                fn(stats)
            except Exception as e:
                log.warning("poll hook failed: %s", e)
        return stats
