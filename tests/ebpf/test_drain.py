"""RingDrain: while the bpf loop is busy, the ring buffer is still read, so a burst
bigger than the ring loses nothing. The control run shows the same burst overflows
the same ring when nobody reads it."""
from __future__ import annotations

import numpy as np
import pytest

from xtcp2.ebpf import tcp_events as E
from xtcp2.ebpf import loader
from xtcp2.modes.bpf_drain import RingDrain

pytestmark = pytest.mark.root

RING = 1 << 18       # 256 KiB: ~720 events
CONNECTIONS = 400    # 4 ring events each (2 ESTABLISHED, 2 CLOSE): 1,600 events, over 2x the ring


def _burst(ns, drain: RingDrain | None, bp, force: bool = True) -> tuple[np.ndarray, int]:
    """CONNECTIONS connections in ns while the loop is 'busy'; then read as the loop does."""
    d0 = bp.drop_counts()[0]
    if drain is not None:
        with drain.busy(force):
            ns.generate(CONNECTIONS)
    else:
        ns.generate(CONNECTIONS)
    src = drain if drain is not None else bp.reader
    out = []
    while True:
        rec = src.read(4096)
        if not len(rec):
            break
        out.append(rec["ev"])
    ev = np.concatenate(out) if out else np.empty(0, E.EVENT_DTYPE)
    return ev[(ev["netns_ino"] == ns.inode) & (ev["kind"] == E.EV_STATE)], bp.drop_counts()[0] - d0


def _established(ev: np.ndarray) -> int:
    return int((ev["newstate"] == E.TCP_ESTABLISHED).sum())


def test_busy_loop_loses_nothing_with_the_drain(bpf_object, netns):
    ns = netns()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=RING, watch_netns=False), bpf_object)
    try:
        # control: nobody reads during the burst, the ring overflows
        ev, drops = _burst(ns, None, bp)
        assert drops > 0 and _established(ev) < 2 * CONNECTIONS, (drops, _established(ev))

        drain = RingDrain(bp.reader, max_bytes=16 * RING, interval=0.002)
        try:
            ev, drops = _burst(ns, drain, bp)
            assert drain.copied > 0, "the drain thread never read the ring"
        finally:
            drain.close()
        assert drops == 0
        assert _established(ev) == 2 * CONNECTIONS
        assert int(((ev["newstate"] == E.TCP_CLOSE) & (ev["oldstate"] != E.TCP_LISTEN)).sum()) == 2 * CONNECTIONS
        # backlog first, then the ring: kernel times never go back by more than the
        # per-CPU interleaving of one ring (records are committed in reservation order)
        assert (np.diff(ev["ktime_ns"].astype(np.int64)) > -50_000_000).all()
    finally:
        bp.close()


def test_outside_busy_the_drain_thread_does_not_read(bpf_object, netns):
    ns = netns()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=1 << 20, watch_netns=False), bpf_object)
    drain = RingDrain(bp.reader, interval=0.002)
    try:
        ns.generate(20)
        assert drain.copied == 0 and drain.backlog() == 0
        assert bp.reader.pending_bytes() > 0
        ev = drain.read(65536)["ev"]
        assert _established(ev[ev["netns_ino"] == ns.inode]) == 40
    finally:
        drain.close()
        bp.close()


def test_a_full_backlog_leaves_the_loss_to_the_kernel_counter(bpf_object, netns):
    ns = netns()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=RING, watch_netns=False), bpf_object)
    drain = RingDrain(bp.reader, max_bytes=RING, interval=0.002)  # ring + backlog < the burst
    try:
        ev, drops = _burst(ns, drain, bp)
        assert drain.peak <= RING // E.RECORD_STRIDE
        assert drops > 0  # counted by the kernel program, as xtcp2_bpf_ringbuf_drops_total reports
        assert _established(ev) < 2 * CONNECTIONS
    finally:
        drain.close()
        bp.close()


def test_a_plain_step_is_drained_only_when_armed(bpf_object, netns):
    ns = netns()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=RING, watch_netns=False), bpf_object)
    drain = RingDrain(bp.reader, max_bytes=16 * RING, interval=0.002)
    try:
        ev, drops = _burst(ns, drain, bp, force=False)  # a step of a loop that kept up: no helper
        assert drain.copied == 0 and drops > 0
        drain.arm(60.0)  # what the loop does after a long step
        ev, drops = _burst(ns, drain, bp, force=False)
        assert drain.copied > 0 and drops == 0
        assert _established(ev) == 2 * CONNECTIONS
    finally:
        drain.close()
        bp.close()
