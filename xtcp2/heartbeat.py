"""The collection loop's heartbeat, for /healthz and the systemd watchdog.

Both modes' loops check their stop event on every turn (poll mode once per poll, so at
least every -frequency plus the poll's own time; bpf mode at least every 0.25 s), so the
Daemon's stop event is a HeartbeatEvent: every is_set() is a beat. A loop that stops beating is stuck
(a hung netlink read, a deadlock), whatever the reason.

XTCP2_TEST_STALL_FILE is a test hook: while that file exists, the loop blocks inside
is_set(), exactly as a stuck loop would. It is read only when the variable is set.
"""
from __future__ import annotations

import os
import threading
import time


class HeartbeatEvent(threading.Event):
    """A threading.Event whose is_set() also records that the caller's loop turned."""

    def __init__(self) -> None:
        super().__init__()
        self.last_beat = 0.0      # time.monotonic() of the last beat; 0 = never
        self.beats = 0
        self._stall_file = os.environ.get("XTCP2_TEST_STALL_FILE", "")

    def is_set(self) -> bool:
        if self._stall_file:
            while os.path.exists(self._stall_file) and not super().is_set():
                time.sleep(0.05)
        self.last_beat = time.monotonic()
        self.beats += 1
        return super().is_set()

    def age(self) -> float | None:
        """Seconds since the last beat, None before the first."""
        return time.monotonic() - self.last_beat if self.beats else None
