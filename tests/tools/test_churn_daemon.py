"""nsTest churn while the real daemon polls every second: 200 add/delete cycles.

Pass criteria (issue 7): no crash; every namespace that lived longer than two polls was
seen by the daemon (its "netns NAME: watching" log line); file descriptors and memory
of the daemon stay within a bound once the churn is over. "Two polls" is counted in the
daemon's own completed polls (its "poll N:" log lines), not in seconds: on a busy machine
a poll can take longer than -frequency.
"""
import bisect
import re
import time
import uuid
from datetime import datetime

import psutil
import pytest

from .conftest import needs_root, tool

pytestmark = [needs_root, pytest.mark.slow]


def _fds(pid):
    return psutil.Process(pid).num_fds()


def _rss(pid):
    return psutil.Process(pid).memory_info().rss


@pytest.mark.timeout(300)
def test_200_cycles_of_churn_under_a_1s_poller(polling_daemon):
    daemon = polling_daemon
    pid = daemon.proc.pid
    time.sleep(3)  # let the daemon settle: imports, first reconcile, allocator warm-up
    fds0, rss0 = _fds(pid), _rss(pid)
    base = daemon.metrics()
    prefix = f"xtc{uuid.uuid4().hex[:6]}"
    # 20 live at a time, one swapped every 250 ms: each lives ~5 s, several polls at 1 s.
    r = tool("nstest", "-initial", "20", "-count", "200", "-sleep", "250ms", "-prefix", prefix,
             "-events", timeout=240)
    assert r.returncode == 0, r.stderr
    added, deleted = {}, {}
    for line in r.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] in ("add", "del"):
            (added if parts[0] == "add" else deleted)[parts[1]] = float(parts[2])
    assert len(added) == 220 and set(deleted) == set(added)

    # the churn is over: give the daemon a few polls to notice the last deletions
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if daemon.metrics().get("xtcp2_namespaces", 0) <= base.get("xtcp2_namespaces", 0):
            break
        time.sleep(0.5)
    assert daemon.proc.poll() is None, "daemon died:\n" + daemon.log_text()[-3000:]
    log = daemon.log_text()
    assert "Traceback" not in log, log[-3000:]

    seen = set(re.findall(r"netns (\S+): watching", log))
    polls = sorted(datetime.strptime(ts, "%Y-%m-%d %H:%M:%S,%f").timestamp()
                   for ts in re.findall(r"^(\S+ \S+) INFO xtcp2\.modes\.poll: poll \d+:", log, re.M))

    def completed_polls(t0, t1):
        return bisect.bisect_left(polls, t1) - bisect.bisect_right(polls, t0)

    # 3 completions inside the lifetime = at least two whole polls began after the add.
    long_lived = {n for n, t in added.items() if completed_polls(t, deleted[n]) >= 3}
    assert len(long_lived) >= 20, f"only {len(long_lived)} namespaces outlived two polls"
    missed = sorted(long_lived - seen)
    assert not missed, f"{len(missed)} namespaces living > 2 polls never watched: {missed[:5]}"

    m = daemon.metrics()
    assert m["xtcp2_namespaces_added_total"] - base["xtcp2_namespaces_added_total"] >= len(long_lived)
    assert m["xtcp2_namespaces_removed_total"] - base["xtcp2_namespaces_removed_total"] >= len(long_lived)
    assert m["xtcp2_namespaces"] <= base["xtcp2_namespaces"], "deleted namespaces still watched"

    fds1, rss1 = _fds(pid), _rss(pid)
    assert fds1 <= fds0 + 8, f"daemon fds grew {fds0} -> {fds1}"
    assert rss1 <= rss0 * 1.5 + 20 * 2**20, f"daemon RSS grew {rss0 >> 20} -> {rss1 >> 20} MiB"
