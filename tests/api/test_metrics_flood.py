"""An unprivileged local user floods the metrics listener of a real daemon with idle
connections: polls keep their schedule, scrapes are served, the daemon's threads and
memory stay bounded, and every idle connection is closed by the server."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from xtcp2.api import metrics_http

from ..daemon_process import DaemonProcess

pytestmark = [pytest.mark.root, pytest.mark.slow]

# Runs as uid 65534 with the system Python (stdlib only). Opens N idle connections, says
# how many; on the next line from the test waits for the server to close them and says
# how many it closed; on the next one closes whatever is left, all at once.
ATTACKER = r"""
import selectors, socket, sys, time
port, n, wait = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
socks = []
for _ in range(n):
    s = socket.socket()
    s.settimeout(10)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    s.setblocking(False)
    socks.append(s)
print("opened", len(socks), flush=True)
sys.stdin.readline()
sel = selectors.DefaultSelector()
for s in socks:
    sel.register(s, selectors.EVENT_READ)
closed, deadline = 0, time.monotonic() + wait
while closed < len(socks) and time.monotonic() < deadline:
    for key, _ in sel.select(0.2):
        try:
            data = key.fileobj.recv(1)
        except OSError:
            data = b""
        if not data:
            sel.unregister(key.fileobj)
            closed += 1
print("closed", closed, flush=True)
sys.stdin.readline()
"""

PROCESSES, PER_PROCESS = 6, 500


def closed_by_server(d: DaemonProcess) -> float:
    return sum(d.value("xtcp2_metrics_connections_closed_total", reason=r) for r in ("limit", "timeout"))


def test_idle_connection_flood_as_nobody():
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon and to drop to uid 65534")
    d = DaemonProcess("--mode", "poll", "-netns", "self", "-dest", "null", "-frequency", "1s")
    attackers: list[subprocess.Popen] = []
    try:
        d.wait_metric("xtcp2_polls_total", 2)
        base = d.status()
        closed_before = closed_by_server(d)
        polls0, t0 = d.value("xtcp2_polls_total"), time.monotonic()
        wait = metrics_http.REQUEST_TIMEOUT + 10
        for _ in range(PROCESSES):
            attackers.append(subprocess.Popen(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "/usr/bin/python3", "-c", ATTACKER, str(d.metrics_port), str(PER_PROCESS), str(wait)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd="/"))
        opened = 0
        for a in attackers:
            word, n = a.stdout.readline().split()
            assert word == "opened"
            opened += int(n)
        assert opened >= 0.9 * PROCESSES * PER_PROCESS, f"only {opened} connections opened"

        # while the flood is on: a scrape is served, promptly
        t = time.monotonic()
        polls_mid = d.value("xtcp2_polls_total")
        scrape_s = time.monotonic() - t
        during = d.status()

        for a in attackers:
            a.stdin.write("\n")
            a.stdin.flush()
        closed = 0
        for a in attackers:
            word, n = a.stdout.readline().split()
            closed += int(n)
        for a in attackers:  # released together
            a.stdin.write("\n")
            a.stdin.flush()
        for a in attackers:
            a.wait(30)
        time.sleep(2)
        polls1, t1 = d.value("xtcp2_polls_total"), time.monotonic()
        after = d.status()
        closed_after = closed_by_server(d)
    finally:
        for a in attackers:
            if a.poll() is None:
                a.kill()
                a.wait()
        d.close()

    print(f"flood: {opened} idle connections, scrape {scrape_s:.2f}s, {polls1 - polls0:.0f} polls in {t1 - t0:.1f}s, "
          f"threads {base['Threads']}/{during['Threads']}/{after['Threads']}, "
          f"RSS kB {base['VmRSS']}/{during['VmRSS']}/{after['VmRSS']} (before/during/after)")
    assert scrape_s < 2.0, f"a scrape during the flood took {scrape_s:.1f}s"
    assert polls_mid > polls0
    elapsed = t1 - t0
    assert polls1 - polls0 >= 0.8 * elapsed - 1, f"{polls1 - polls0:.0f} polls in {elapsed:.1f}s at -frequency 1s"
    assert closed == opened, f"the server closed {closed} of {opened} idle connections"
    assert closed_after - closed_before == opened, "every closed idle connection is counted"
    for s in (during, after):
        assert s["Threads"] <= base["Threads"] + 2, f"threads {base['Threads']} -> {s['Threads']}"
        assert s["VmRSS"] <= base["VmRSS"] + 50 * 1024, f"RSS {base['VmRSS']} -> {s['VmRSS']} kB"


# Runs as uid 65534: connects as fast as it can for `seconds`, never sends a byte, keeps
# at most 500 of its own connections open (closing its oldest), reports how many it made.
CHURNER = r"""
import collections, socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
held, made, end = collections.deque(), 0, time.monotonic() + seconds
while time.monotonic() < end:
    s = socket.socket()
    s.settimeout(2)
    try:
        s.connect(("127.0.0.1", port))
    except OSError:
        s.close()
        continue
    made += 1
    held.append(s)
    if len(held) > 500:
        held.popleft().close()
print(made, flush=True)
"""


def test_connect_flood_as_nobody_scrapes_still_served():
    if os.geteuid() != 0:
        pytest.skip("needs root to run the daemon and to drop to uid 65534")
    d = DaemonProcess("--mode", "poll", "-netns", "self", "-dest", "null", "-frequency", "1s")
    churners: list[subprocess.Popen] = []
    try:
        d.wait_metric("xtcp2_polls_total", 2)
        base = d.status()
        polls0, t0 = d.value("xtcp2_polls_total"), time.monotonic()
        seconds = 12
        for _ in range(3):
            churners.append(subprocess.Popen(
                ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                 "/usr/bin/python3", "-c", CHURNER, str(d.metrics_port), str(seconds)],
                stdout=subprocess.PIPE, text=True, cwd="/"))
        time.sleep(1)
        slowest, served = 0.0, 0
        while time.monotonic() - t0 < seconds - 1:
            t = time.monotonic()
            d.scrape(timeout=5)
            slowest = max(slowest, time.monotonic() - t)
            served += 1
            time.sleep(0.3)
        during = d.status()
        made = sum(int(c.communicate(timeout=30)[0]) for c in churners)
        polls1, t1 = d.value("xtcp2_polls_total"), time.monotonic()
    finally:
        for c in churners:
            if c.poll() is None:
                c.kill()
                c.wait()
        d.close()
    print(f"churn: {made} connections in {seconds}s, {served} scrapes, slowest {slowest:.2f}s, "
          f"{polls1 - polls0:.0f} polls in {t1 - t0:.1f}s, threads {base['Threads']}/{during['Threads']}")
    assert made > 1000, "the flood was too weak to test anything"
    assert slowest < 2.0, f"a scrape took {slowest:.2f}s during the flood"
    assert polls1 - polls0 >= 0.8 * (t1 - t0) - 1
    assert during["Threads"] <= base["Threads"] + 2
