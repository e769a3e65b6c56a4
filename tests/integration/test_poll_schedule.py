"""-frequency is a period: polls are due on a fixed grid, whatever each poll takes."""
from __future__ import annotations

import re
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.root

LINE = re.compile(r"^(\S+ \S+) INFO xtcp2\.modes\.poll: poll (\d+): .* seconds=([\d.]+)")
SKIPPED = re.compile(r"poll (\d+) took [\d.]+s, longer than -frequency \S+: (\d+) scheduled poll\(s\) skipped")


def test_daemon_polls_on_the_grid(make_netns):
    """A real daemon at -frequency 200ms: every poll starts on the grid t0 + k x 200ms
    (its own time, reconcile over /proc and two dumps, does not push the next one
    later), so N polls span N periods, plus any tick a loaded host made it skip."""
    ns = make_netns()
    period, polls = 0.2, 21
    r = subprocess.run([sys.executable, "-m", "xtcp2", "--mode", "poll", "-frequency", "200ms", "-maxLoops", str(polls),
                        "--netns", ns, "-dest", "null", "-promListen", "127.0.0.1:0", "-grpcPort", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-3000:]
    starts, ends, skipped = {}, {}, {}
    for line in r.stderr.splitlines():
        if m := LINE.match(line):
            k = int(m.group(2))
            ends[k] = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
            starts[k] = ends[k] - float(m.group(3))   # the collector's start (after reconcile)
        elif m := SKIPPED.search(line):
            skipped[int(m.group(1))] = int(m.group(2))   # a loaded host may overrun a tick
    assert sorted(starts) == list(range(1, polls + 1)), r.stderr[-3000:]
    # poll 1 is start-up (opening sockets): measure from poll 2
    ticks = 0
    for k in range(2, polls + 1):
        due = starts[2] + ticks * period
        late = ends.get(k - 1, 0) > due - 0.02  # the previous poll ran past this tick: it starts at once
        assert starts[k] > due - 0.35 * period and (starts[k] < due + 0.35 * period or late), \
            f"poll {k} started {(starts[k] - starts[2]) / period:.2f} periods after poll 2, expected {ticks}"
        ticks += 1 + skipped.get(k, 0)


def _daemon(ns: str, period: float, hook_sleep: float):
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon

    # one reconcile (at the first poll): a poll is then the two dumps and the hook
    d = Daemon(Config(mode="poll", netns=[ns], dest="null", poll_frequency=period, poll_timeout=period,
                      reconcile_before_poll=False))
    starts = []

    def slow(stats):  # the poll itself takes hook_sleep longer
        starts.append(time.monotonic() - stats.seconds)
        time.sleep(hook_sleep)

    d.add_poll_hook(slow)
    return d, starts


def _run_for(d, seconds: float) -> None:
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    time.sleep(seconds)
    d.stop()
    t.join(10)
    assert not t.is_alive()


def test_slow_polls_keep_the_rate(make_netns):
    """Polls taking 40% of the period still come once per period."""
    d, _ = _daemon(make_netns(), 0.2, 0.08)
    try:
        _run_for(d, 4.0)
        skipped = d.mode.ticks_skipped
        # polls at t0, t0 + 0.2, ... t0 + 4.0 (the last may or may not start before stop)
        assert 20 <= d.loops + skipped <= 22, (d.loops, skipped)
    finally:
        d.close()


def test_overrunning_poll_skips_and_counts_ticks(make_netns):
    """A poll that takes 2.5 periods: the latest tick it ran over is polled at once, the
    others are skipped and counted. Polled or skipped, every tick is accounted for."""
    before = REGISTRY.get_sample_value("xtcp2_poll_ticks_skipped_total") or 0.0
    period = 0.2
    d, starts = _daemon(make_netns(), period, 2.5 * period)
    try:
        _run_for(d, 3.0)
        skipped = d.mode.ticks_skipped
        assert d.loops >= 4
        # every poll but the last ran over two ticks or more: one skipped at least
        assert skipped >= d.loops - 1, (d.loops, skipped)
        # polled or skipped, every tick of the 3 s is accounted for: 0, 0.2, ... 3.0
        assert abs(d.loops + skipped - 16) <= 1, (d.loops, skipped)
        assert REGISTRY.get_sample_value("xtcp2_poll_ticks_skipped_total") - before == skipped
        # no idle tick waited for: the next poll follows at once (0.5 s + the poll's own
        # time), where waiting for the next free tick would take 0.6 s
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert min(gaps) < 2.9 * period, gaps
    finally:
        d.close()


def test_triggered_poll_leaves_the_grid(make_netns):
    """A poll triggered between ticks runs at once and the scheduled ones stay on their ticks."""
    period = 0.5
    d, starts = _daemon(make_netns(), period, 0.0)
    try:
        t = threading.Thread(target=d.run, daemon=True)
        t.start()
        time.sleep(0.25 * period)
        deadline = time.monotonic() + 5
        while not starts and time.monotonic() < deadline:
            time.sleep(0.01)
        t0 = starts[0]
        time.sleep(max(0.0, t0 + 1.4 * period - time.monotonic()))
        d.trigger_poll()
        time.sleep(max(0.0, t0 + 3.2 * period - time.monotonic()))
        d.stop()
        t.join(10)
        offsets = [(s - t0) / period for s in starts]
        # ticks 0, 1, 2, 3 plus the triggered poll from 1.4 (a loaded host starts it up to
        # ~0.1 s late; it must still run before tick 2, not wait for it)
        assert len(offsets) == 5, offsets
        on_tick = [o for o in offsets if abs(o - round(o)) < 0.1]
        triggered = [o for o in offsets if abs(o - round(o)) >= 0.1]
        assert [round(o) for o in on_tick] == [0, 1, 2, 3], offsets
        assert len(triggered) == 1 and 1.4 <= triggered[0] < 1.85, offsets
    finally:
        d.close()
