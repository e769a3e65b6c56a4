"""20 concurrent live-stream clients, one of which never reads.

The real daemon polls a namespace of 101 sockets twice a second. Nineteen upstream-built
clients read the FlatRecords stream; the twentieth opens it and never reads. The
collector must keep its poll rate, every reader must get every record, and only the
stalled client's own counter shows drops.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from ..prom import sample
from .conftest import RUNNER

DROPS = "xtcp2_grpc_stream_dropped_records_total"

pytestmark = [pytest.mark.root, pytest.mark.slow]

READERS, STALLED, SECONDS, FREQ, BASELINE = 19, 1, 8.0, 0.5, 3.0


def test_twenty_clients_one_stalled(start_daemon, upstream_gen, socket_netns, registry):
    rd = start_daemon(server_kw={"queue_rows": 500}, poll_frequency=FREQ, poll_timeout=0.4)
    rd.wait_loops(1)
    published = {"rows": 0, "on": False}

    def count(env):
        if published["on"]:
            published["rows"] += env.rows

    rd.daemon.add_listener(count)
    # the poll rate this machine manages right now without any client (it is shared)
    b0, tb0 = rd.daemon.loops, time.monotonic()
    time.sleep(BASELINE)
    baseline_rate = (rd.daemon.loops - b0) / (time.monotonic() - tb0)
    drops_before = sample(registry, DROPS, method="FlatRecords")
    # The clients stand for remote consumers: lower their CPU priority so the test
    # measures what the daemon's own streaming costs the collector, not the harness.
    proc = subprocess.Popen(
        ["nice", "-n", "10", sys.executable, str(RUNNER), str(upstream_gen), rd.target],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdin.write(json.dumps([["clients", {"readers": READERS, "stalled": STALLED, "seconds": SECONDS}]]))
    proc.stdin.close()
    proc.stdin = None  # communicate() below must not flush it again
    try:
        _measure(rd, proc, published, drops_before, socket_netns, baseline_rate, registry)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _measure(rd, proc, published, drops_before, socket_netns, baseline_rate, registry) -> None:
    assert proc.stderr.readline().strip() == "clients-ready"
    deadline = time.monotonic() + 10
    while len(rd.server.subscribers()) < READERS + STALLED and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(rd.server.subscribers()) == READERS + STALLED
    # measure between poll boundaries so every reader saw whole polls
    loops0, t0 = rd.daemon.loops, time.monotonic()
    published["on"] = True
    time.sleep(SECONDS - 2.0)
    published["on"] = False
    loops1, t1 = rd.daemon.loops, time.monotonic()
    # read the counters now: when the clients disconnect, records still queued for them
    # are counted as their drops as well
    dropped = sorted(s.dropped_records for s in rd.server.subscribers())
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    result = json.loads(out)[0]

    polls = loops1 - loops0
    expected = (t1 - t0) / FREQ
    # the configured rate, unless the machine could not even keep it without clients;
    # then the clients must not cost more than 10% of what it did manage
    floor = min(0.85 * expected, 0.9 * baseline_rate * (t1 - t0))
    assert polls >= floor, (f"collector slowed: {polls} polls in {t1 - t0:.1f}s, configured ~{expected:.0f}, "
                            f"{baseline_rate * (t1 - t0):.1f} without clients")

    assert dropped[-1] > 0, "the stalled client never overflowed its queue"
    assert dropped[:-1] == [0] * READERS, f"a reading client lost records: {dropped}"
    assert sample(registry, DROPS, method="FlatRecords") - drops_before >= dropped[-1]

    counts = result["counts"]
    assert len(counts) == READERS
    # every reader received at least all rows published while we measured
    assert min(counts) >= published["rows"] > 0, (counts, published["rows"])
    assert max(counts) - min(counts) <= 3 * socket_netns["sockets"], counts
    print(f"\n{polls} polls in {t1 - t0:.1f}s (configured {expected:.1f}, baseline {baseline_rate * (t1 - t0):.1f}); {published['rows']} rows published; "
          f"readers got {min(counts)}..{max(counts)}; stalled client dropped {dropped[-1]}")
