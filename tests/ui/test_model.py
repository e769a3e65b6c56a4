"""ConnTable: connections from records, rates from consecutive samples, closes, groups."""
from __future__ import annotations

import socket

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.ui.filter import parse
from xtcp2.ui.model import ConnTable, cells, group_conns, sort_conns


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def rec(cookie: int, sport: int, dport: int, *, state=1, rtt_us=1000, acked=0, received=0, retrans=0,
        netns="default", inode=4026531840, trigger=pb.XtcpFlatRecord.TRIGGER_POLL, v6=False) -> pb.XtcpFlatRecord:
    fam = socket.AF_INET6 if v6 else socket.AF_INET
    lo = socket.inet_pton(fam, "::1" if v6 else "127.0.0.1")
    return pb.XtcpFlatRecord(
        netns=netns, netns_inode=inode, inet_diag_msg_socket_cookie=cookie, inet_diag_msg_state=state,
        inet_diag_msg_socket_source=lo, inet_diag_msg_socket_source_port=sport,
        inet_diag_msg_socket_destination=lo, inet_diag_msg_socket_destination_port=dport,
        tcp_info_rtt=rtt_us, tcp_info_snd_cwnd=10, tcp_info_bytes_acked=acked,
        tcp_info_bytes_received=received, tcp_info_total_retrans=retrans, trigger=trigger)


def test_rates_come_from_consecutive_samples():
    clock = Clock()
    t = ConnTable(clock=clock)
    t.ingest([rec(1, 5000, 40000, acked=1000, received=50)])
    clock.t += 2.0
    t.ingest([rec(1, 5000, 40000, acked=201000, received=4050, retrans=3, rtt_us=2500)])
    (c,) = t.snapshot()
    assert c.tx_bps == 100000.0 and c.rx_bps == 2000.0
    assert c.rtt_ms == 2.5 and c.retrans == 3 and list(c.rtt_hist) == [1.0, 2.5]
    assert c.local == "127.0.0.1:5000" and c.peer == "127.0.0.1:40000" and c.state_text == "ESTAB"
    assert cells(c, clock.t)[-1] == "2s"
    s = t.summary(t.snapshot())
    assert s.retrans_per_s == 1.5 and s.rtt_p50_ms == 2.5


def test_close_record_and_full_poll_remove_connections():
    clock = Clock()
    t = ConnTable(clock=clock)
    t.ingest([rec(1, 5000, 40000), rec(2, 5000, 40001), rec(3, 5000, 40002)], full_poll=True)
    clock.t += 1
    t.ingest([rec(2, 5000, 40001, trigger=pb.XtcpFlatRecord.TRIGGER_CLOSE)])
    assert sorted(c.key[1] for c in t.snapshot()) == [1, 3]
    clock.t += 1
    t.ingest([rec(3, 5000, 40002), rec(4, 5000, 40003)], full_poll=True)  # 1 is gone from the poll
    assert sorted(c.key[1] for c in t.snapshot()) == [3, 4]
    s = t.summary(t.snapshot())
    assert s.closes_per_s == 1.0 and s.opens_per_s == 0.5  # 2 closes, 1 open over 2 s


def test_stream_expiry_follows_the_refresh_period():
    clock = Clock()
    t = ConnTable(clock=clock)
    for _ in range(3):
        t.ingest([rec(1, 5000, 40000), rec(2, 5000, 40001)])
        clock.t += 1.0
    t.ingest([rec(1, 5000, 40000)])  # 2 no longer refreshed
    clock.t += 3.5
    t.expire()
    assert [c.key[1] for c in t.snapshot()] == []  # both past 3 periods now
    t.ingest([rec(5, 1, 2)])
    assert [c.key[1] for c in t.snapshot()] == [5]


def test_same_cookie_in_two_namespaces_is_two_connections():
    t = ConnTable(clock=Clock())
    t.ingest([rec(7, 1, 2, netns="a", inode=1), rec(7, 1, 2, netns="b", inode=2)])
    assert len(t.snapshot()) == 2


def test_filter_sort_and_group_on_the_table():
    t = ConnTable(clock=Clock())
    t.ingest([rec(1, 5000, 40000, rtt_us=300, netns="a", inode=1),
              rec(2, 40000, 5000, rtt_us=900, netns="a", inode=1),
              rec(3, 6000, 0, state=10, rtt_us=0, netns="b", inode=2),
              rec(4, 443, 50000, rtt_us=100, netns="b", inode=2, v6=True)])
    assert [c.key[1] for c in t.snapshot(parse("netns = a"))] == [1, 2]
    assert [c.key[1] for c in t.snapshot(parse("src ::1"))] == [4]
    now = 1000.0
    assert [c.key[1] for c in sort_conns(t.snapshot(), "RTT_MS", True, now)] == [2, 1, 4, 3]
    assert [c.sport for c in sort_conns(t.snapshot(), "LOCAL", False, now)] == [5000, 6000, 40000, 443]
    groups = {g.name: g for g in group_conns(t.snapshot(), "netns")}
    assert groups["a"].conns == 2 and groups["a"].established == 2
    assert groups["b"].conns == 2 and groups["b"].established == 1
