"""Tracker decisions on synthetic event arrays (no kernel needed)."""
from __future__ import annotations

import numpy as np

from xtcp2.ebpf import tcp_events as E
from xtcp2.modes.tracker import Tracker


def ev(rows):
    """rows: (cookie, netns_ino, oldstate, newstate)"""
    a = np.zeros(len(rows), E.EVENT_DTYPE)
    for i, (ck, ino, old, new) in enumerate(rows):
        a[i]["kind"] = E.EV_STATE
        a[i]["cookie"], a[i]["netns_ino"], a[i]["oldstate"], a[i]["newstate"] = ck, ino, old, new
        a[i]["ktime_ns"] = 1000 + i
    return a


def test_opens_wait_for_the_window_and_skip_sockets_already_closed():
    t = Tracker(window=0.01, close_wait=0.1)
    t.ingest(ev([(1, 7, 2, 1), (2, 7, 3, 1), (3, 8, 2, 1), (2, 7, 8, 7)]), now=0.0)
    assert t.due_opens(0.005) == []
    due = dict(t.due_opens(0.011))
    assert sorted(due) == [7, 8]
    assert due[7]["cookie"].tolist() == [1]   # cookie 2 closed within the window: no lookup
    assert due[8]["cookie"].tolist() == [3]
    assert t.due_opens(1.0) == []
    assert t.live == {7: 1, 8: 1}


def test_close_waits_for_broadcast_and_is_emitted_once_whichever_comes_first():
    t = Tracker(window=0.01, close_wait=0.1)
    t.ingest(ev([(10, 7, 9, 7), (11, 7, 9, 7), (12, 7, 9, 7)]), now=0.0)
    # the broadcast for 10 arrives in time
    assert t.not_final(np.array([10], np.uint64)).tolist() == [True]
    t.final_emitted(np.array([10], np.uint64), 0.05, 1)
    assert len(t.due_closes(0.05)) == 0
    out = t.due_closes(0.2)
    assert sorted(out["cookie"].tolist()) == [11, 12]  # no broadcast: from BPF counters
    # a late broadcast for 11 must not make a second record; an unknown cookie passes
    assert t.not_final(np.array([11, 99, 0], np.uint64)).tolist() == [False, True, True]
    assert t.close_ktime[11] == 1001


def test_final_memory_expires():
    t = Tracker(close_wait=0.1, remember=1.0, remember_final=5.0)
    t.final_emitted(np.array([5], np.uint64), 0.0, 1)
    t.ingest(ev([(6, 7, 9, 7)]), now=10.0)
    assert t.not_final(np.array([5], np.uint64)).tolist() == [True]


def test_netns_events_and_requeue():
    t = Tracker(window=0.01)
    a = np.zeros(1, E.EVENT_DTYPE)
    a["kind"], a["netns_ino"] = E.EV_NETNS, 4242
    t.ingest(a, 0.0)
    assert t.netns_seen == [4242]
    t.ingest(ev([(1, 9, 2, 1)]), 0.0)
    (ino, e), = t.due_opens(0.02)
    t.requeue(ino, e, 0.05)
    assert t.due_opens(0.04) == [] and len(t.due_opens(0.05)) == 1
