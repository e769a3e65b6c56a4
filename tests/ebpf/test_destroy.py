"""sock_diag destroy groups: final tcp_info of every short connection, per namespace."""
from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest

from xtcp2.columns import Columns
from xtcp2.netlink.destroy import DestroySubscriber, DestroyWatcher
from xtcp2.netns.enter import NetnsEnterer

from .conftest import destroy_subscriber

pytestmark = pytest.mark.root


def _collect(w: DestroyWatcher, want: int, timeout: float = 10.0):
    got = {}
    overrun = False
    deadline = time.monotonic() + timeout
    while sum(c.n for c in got.values()) < want and time.monotonic() < deadline:
        for key, cols, ov in w.poll(0.1):
            overrun |= ov
            got[key] = _concat([got[key], cols]) if key in got else cols
    return got, overrun


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    out = Columns(sum(p.n for p in parts))
    for k in ("inet_diag_msg_socket_source_port", "inet_diag_msg_socket_destination_port",
              "tcp_info_bytes_acked", "tcp_info_bytes_received", "inet_diag_msg_state", "inet_diag_msg_socket_cookie"):
        out[k] = np.concatenate([p[k] for p in parts])
    return out


def test_short_connections_final_tcp_info_per_namespace(netns):
    a, b = netns(), netns()
    enter = NetnsEnterer()
    w = DestroyWatcher()
    try:
        assert w.add("a", lambda: enter.run_in(a.path, DestroySubscriber.open))
        assert w.add("b", lambda: enter.run_in(b.path, DestroySubscriber.open))
        conns = a.generate(300, procs=2)
        assert len(conns) == 300
        got, overrun = _collect(w, 601)  # 300 client + 300 server sockets + the listener
        assert not overrun
        assert "b" not in got  # the broadcast stays in the freed socket's namespace
        cols = got["a"]
        assert cols.n == 601
        assert (cols["inet_diag_msg_state"] == 7).all()
        assert (cols["inet_diag_msg_socket_destination_port"] == 0).sum() == 1
        assert len(set(cols["inet_diag_msg_socket_cookie"].tolist())) == 601
        by_port = {int(p): i for i, p in enumerate(cols["inet_diag_msg_socket_source_port"])}
        for cport, sport, sent, received in conns:
            i = by_port[cport]  # client side: its own ephemeral port
            assert cols["inet_diag_msg_socket_destination_port"][i] == sport
            # tcp_info counts the SYN (active opener) and the FIN in bytes_acked, the FIN in bytes_received
            assert cols["tcp_info_bytes_acked"][i] == sent + 2
            assert cols["tcp_info_bytes_received"][i] == received + 1
        w.remove("a")
        assert w.keys() == ["b"]
    finally:
        w.close()
        enter.close()


def test_enobufs_is_reported_as_overrun(netns):
    ns = netns()
    with destroy_subscriber(ns, rcvbuf=4096) as sub:
        ns.generate(400, procs=2)
        time.sleep(0.2)
        cols, overrun = sub.read()
    assert overrun and cols.n < 800


def test_close_record_pump_for_poll_mode(netns):
    from xtcp2.config import Config
    from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
    from xtcp2.modes.closes import CloseRecordPump
    from xtcp2.netns.registry import NamespaceTable
    from xtcp2.pipeline import Emitter
    from xtcp2.records.sink import RecordSink

    ns = netns()
    table = NamespaceTable([ns.name])
    rows = []
    cfg = Config(dest="null", hostname="h")
    emitter = Emitter(cfg)
    emitter.add_listener(lambda env: rows.extend(env.message().row))
    pump = CloseRecordPump(table, RecordSink(cfg, emitter))
    try:
        table.reconcile()
        pump.sync()
        conns = ns.generate(100, procs=1)
        deadline = time.monotonic() + 10
        while len(rows) < 201 and time.monotonic() < deadline:
            assert not pump.pump(0.1)
        assert len(rows) == 201
        assert all(r.trigger == pb.XtcpFlatRecord.TRIGGER_CLOSE and r.netns == ns.name and r.hostname == "h"
                   and r.timestamp_ns for r in rows)
        # the sink numbers close records like every other record
        assert sorted(r.record_counter for r in rows) == list(range(1, 202))
        by_port = {r.inet_diag_msg_socket_source_port: r for r in rows}
        for cport, _, sent, received in conns:
            assert (by_port[cport].tcp_info_bytes_acked, by_port[cport].tcp_info_bytes_received) == (sent + 2, received + 1)
        subprocess.run(["ip", "netns", "del", ns.name], check=True)
        table.reconcile()
        pump.sync()
        assert pump.watcher.keys() == []
    finally:
        pump.close()
        emitter.close()
        table.close()


def test_keep_filter_skips_messages_before_decoding(netns):
    """bpf mode decodes only broadcasts of sockets it has not reported yet."""
    ns = netns()
    seen = []

    def keep(cookies):
        seen.extend(cookies.tolist())
        return cookies % 2 == 0
    with destroy_subscriber(ns) as sub:
        ns.generate(50, procs=1)
        time.sleep(0.3)
        cols, overrun = sub.read(keep=keep)
    assert not overrun and len(seen) == 101 and len(set(seen)) == 101 and all(seen)
    assert sorted(cols["inet_diag_msg_socket_cookie"].tolist()) == sorted(c for c in seen if c % 2 == 0)
