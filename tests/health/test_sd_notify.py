"""systemd notify protocol, checked on a datagram socket the test listens on: READY=1
once collection started, WATCHDOG=1 while the loop is live, no pings while it is stuck,
pings again after it recovers, STOPPING=1 at the end."""
from __future__ import annotations

import socket
import time

import pytest

from .daemon import HealthDaemon

pytestmark = pytest.mark.root


def _recv_until(sock: socket.socket, want: str, timeout: float) -> list[str]:
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            break
        got.append(msg)
        if msg.startswith(want):
            return got
    raise AssertionError(f"no {want!r} within {timeout}s; got {got}")


def _drain(sock: socket.socket, seconds: float) -> list[str]:
    got = []
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            got.append(sock.recv(4096).decode())
        except socket.timeout:
            break
    return got


def test_ready_watchdog_stuck_recovered_stopping(tmp_path):
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        d = HealthDaemon(tmp_path, "--mode", "poll", "--netns", "self", "-frequency", "200ms", "-timeout", "100ms",
                         "-livenessTimeout", "1s", "-dest", "null",
                         env={"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "400000"})
        try:
            got = _recv_until(sock, "READY=1", 30)
            assert got[-1].startswith("READY=1\nSTATUS=")
            pings = [m for m in _drain(sock, 1.5) if m == "WATCHDOG=1"]
            assert len(pings) >= 4, pings          # every 0.2 s (half of WATCHDOG_USEC)

            d.stall.touch()
            _recv_until(sock, "STATUS=stuck", 10)
            quiet = _drain(sock, 1.5)
            assert "WATCHDOG=1" not in quiet, quiet  # systemd would restart us now

            d.stall.unlink()
            _recv_until(sock, "WATCHDOG=1", 10)
            assert d.stop() == 0
            assert "STOPPING=1" in _drain(sock, 2)
        finally:
            d.close()


def test_watchdog_for_another_pid_is_not_ours(tmp_path):
    from xtcp2.api.health import watchdog_interval
    assert watchdog_interval({"WATCHDOG_USEC": "2000000"}) == 1.0
    assert watchdog_interval({"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None
