"""--mode bpf end to end against the real kernel: short connections, drops, opens, refresh."""
from __future__ import annotations

import collections
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from xtcp2.ebpf import loader

from ..prom import sample
from .harness import T, running

pytestmark = pytest.mark.root


def _closes(records, ns_name):
    return [r for r in records if r.trigger == T.TRIGGER_CLOSE and r.netns == ns_name]


def _check_every_connection(records, ns, conns, deltas=None) -> None:
    closes = _closes(records, ns.name)
    cookies = [r.inet_diag_msg_socket_cookie for r in closes]
    assert len(cookies) == len(set(cookies)), "a socket got two close records"
    # loopback reuses TIME_WAIT 4-tuples (tcp_tw_reuse=2): compare multisets per 4-tuple
    seen = collections.defaultdict(collections.Counter)
    for r in closes:
        seen[(r.inet_diag_msg_socket_source_port, r.inet_diag_msg_socket_destination_port)][
            (r.tcp_info_bytes_acked, r.tcp_info_bytes_received)] += 1
    want = collections.defaultdict(collections.Counter)
    lport = conns[0][1]
    for cport, sport, sent, received in conns:
        # tcp_info semantics: bytes_acked counts the active opener's SYN and the FIN, bytes_received the FIN
        want[(cport, sport)][(sent + 2, received + 1)] += 1
        want[(sport, cport)][(received + 1, sent + 1)] += 1
    missing = {t: w - seen.get(t, collections.Counter()) for t, w in want.items()}
    missing = {t: m for t, m in missing.items() if m}
    assert not missing, f"{ns.name}: {len(missing)} 4-tuples lack exact close records, e.g. {list(missing.items())[:3]}"
    if deltas is not None:
        active = sum(1 for r in closes if r.inet_diag_msg_socket_destination_port == lport)
        passive = sum(1 for r in closes if r.inet_diag_msg_socket_source_port == lport
                      and r.inet_diag_msg_socket_destination_port != 0)
        assert (active, passive) == (deltas["ActiveOpens"], deltas["PassiveOpens"]), ns.name


def _delta(before, after):
    return {k: after[k] - before.get(k, 0) for k in ("ActiveOpens", "PassiveOpens")}


@pytest.mark.slow
def test_20000_short_connections_in_3_namespaces_all_closed_exactly(bpf_object, netns):
    a, b = netns(), netns()
    late_name = f"{a.name}-late"
    total, per = 20000, [6667, 6667, 6666]
    try:
        with running([a.name, b.name, late_name]) as (col, cap):
            before = {a.name: a.snmp_tcp(), b.name: b.snmp_tcp()}
            subprocess.run(["ip", "netns", "add", late_name], check=True)
            from .conftest import Netns
            late = Netns(late_name)
            subprocess.run(["ip", "-n", late_name, "link", "set", "lo", "up"], check=True)
            before[late_name] = late.snmp_tcp()
            t0 = time.monotonic()
            with ThreadPoolExecutor(3) as ex:
                futs = {ns.name: ex.submit(ns.generate, k, 2, 180) for ns, k in zip((a, b, late), per)}
                conns = {name: f.result() for name, f in futs.items()}
            gen_seconds = time.monotonic() - t0
            after = {ns.name: ns.snmp_tcp() for ns in (a, b, late)}
            time.sleep(0.5)
            col_stats = dict(col.stats)
        records = cap.records()
        counters = [r.record_counter for r in records]
        assert len(set(counters)) == len(counters), "record_counter repeats (resync and event records share it)"
        assert sum(len(v) for v in conns.values()) == total
        for ns in (a, b, late):
            _check_every_connection(records, ns, conns[ns.name], _delta(before[ns.name], after[ns.name]))
            assert _delta(before[ns.name], after[ns.name])["ActiveOpens"] == len(conns[ns.name])
        print(f"\n20000 connections in {gen_seconds:.1f}s; collector stats {col_stats}")
    finally:
        subprocess.run(["ip", "netns", "del", late_name], capture_output=True)


def test_close_records_from_bpf_counters_alone(bpf_object, netns):
    ns = netns()
    with running([ns.name], use_destroy_groups=False) as (col, cap):
        conns, deltas = ns.generate_counted(500)
        time.sleep(0.5)
        assert col.stats["close_destroy"] == 0 and col.stats["close_bpf"] >= 1000
    _check_every_connection(cap.records(), ns, conns, deltas)


HOLD = (
    "import socket,sys\n"
    "l=socket.socket();l.bind(('127.0.0.1',0));l.listen(128)\n"
    "cs=[socket.create_connection(l.getsockname()) for _ in range(50)]\n"
    "ss=[l.accept()[0] for _ in cs]\n"
    "print(' '.join(str(c.getsockname()[1]) for c in cs),flush=True)\n"
    "sys.stdin.read()\n"
)


def test_tiny_ring_buffer_drops_trigger_resync_and_broadcasts_replace_lost_closes(bpf_object, netns, registry):
    ns = netns()
    opts = loader.LoadOptions(ringbuf_bytes=4096, watch_netns=False)
    drops0 = sample(registry, "xtcp2_bpf_ringbuf_drops_total")
    resyncs0 = sample(registry, "xtcp2_bpf_resyncs_total", reason="ringbuf_drops")
    with running([ns.name], load_options=opts) as (col, cap):
        holder = ns.popen(sys.executable, "-c", HOLD, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            ports = {int(p) for p in holder.stdout.readline().split()}
            assert len(ports) == 50
            n_before = len(cap.records())
            # a flood no 4 KiB ring can hold, while the collector is busy with the burst
            conns, deltas = ns.generate_counted(3000)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and sample(registry, "xtcp2_bpf_resyncs_total", reason="ringbuf_drops") == resyncs0:
                time.sleep(0.05)
            time.sleep(0.5)
        finally:
            holder.stdin.close()
            holder.wait(10)
    assert sample(registry, "xtcp2_bpf_ringbuf_drops_total") > drops0
    assert sample(registry, "xtcp2_bpf_resyncs_total", reason="ringbuf_drops") > resyncs0
    resynced = {r.inet_diag_msg_socket_source_port for r in cap.records()[n_before:]
                if r.trigger == T.TRIGGER_RESYNC and r.netns == ns.name and r.inet_diag_msg_state == 1}
    assert ports <= resynced
    # the close events the ring lost are not lost: their destroy broadcasts passed the
    # kernel-side filter (only reported sockets are filtered) and became the records
    assert col.stats["close_destroy"] > 0 and col.stats["close_bpf"] > 0
    _check_every_connection(cap.records(), ns, conns, deltas)


def test_duplicate_broadcasts_are_dropped_in_the_kernel(bpf_object, netns, registry):
    def counts() -> tuple[float, float]:
        return (sample(registry, "xtcp2_bpf_destroy_broadcasts_filtered_total"),
                sample(registry, "xtcp2_destroy_messages_total"))

    ns = netns()
    with running([ns.name]) as (col, cap):
        assert col.watcher.filter_fd >= 0
        f0, m0 = counts()
        conns, deltas = ns.generate_counted(500)
        time.sleep(0.5)
        f1, m1 = counts()
        filtered, received = f1 - f0, m1 - m0
    _check_every_connection(cap.records(), ns, conns, deltas)
    assert col.stats["close_bpf"] >= 1000 and col.stats["close_destroy"] == 0
    # 1000 connected sockets + the listener; the generator's own short-lived sockets may add a few
    assert filtered >= 1001 and received <= 5, (filtered, received)


@pytest.mark.parametrize("target", [None, "xtcp2_no_such_tracepoint"], ids=["tp_btf", "tracepoint"])
def test_open_record_then_refresh_of_a_live_connection(bpf_object, netns, target):
    ns = netns()
    with running([ns.name], frequency=1.0, load_options=loader.LoadOptions(tp_btf_target=target)) as (col, cap):
        holder = ns.popen(sys.executable, "-c", HOLD.replace("range(50)", "range(2)"),
                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            ports = {int(p) for p in holder.stdout.readline().split()}

            def refreshed() -> bool:
                return ports <= {r.inet_diag_msg_socket_source_port for r in cap.records()
                                 if r.netns == ns.name and r.trigger == T.TRIGGER_REFRESH}
            _wait(refreshed, 6.0)  # refresh every 1 s; a loaded host may be late
            recs = [r for r in cap.records() if r.netns == ns.name]
        finally:
            holder.stdin.close()
            holder.wait(10)
    opens = [r for r in recs if r.trigger == T.TRIGGER_OPEN and r.inet_diag_msg_socket_source_port in ports]
    assert len(opens) == 2
    assert all(r.inet_diag_msg_state == 1 and r.tcp_info_state == 1 and r.inet_diag_msg_socket_cookie for r in opens)
    assert all(r.tcp_info_rcv_mss > 0 and r.netns_inode == ns.inode for r in opens)
    refresh = {r.inet_diag_msg_socket_source_port for r in recs if r.trigger == T.TRIGGER_REFRESH}
    assert ports <= refresh


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return cond()


def test_new_namespace_noticed_at_once_and_released_when_gone(bpf_object):
    from .conftest import Netns
    name = f"xtcp2bpf-life-{time.monotonic_ns() % 100000}"
    try:
        # frequency 30 s: nothing periodic happens during the test, only events act
        with running([name], frequency=30.0) as (col, cap):
            assert not col.table.by_key
            subprocess.run(["ip", "netns", "add", name], check=True)
            ino = Netns(name).inode
            assert _wait(lambda: any(k[1] == ino for k in col.watcher.keys()), 2.0), "namespace event not acted on"
            assert col.table.by_inode(ino) is not None
            subprocess.run(["ip", "netns", "del", name], check=True)
            col.request_reconcile()  # what the refresh tick does every poll_frequency
            assert _wait(lambda: not col.watcher.keys() and not col.table.by_key, 3.0), "a gone namespace stays pinned"
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_classic_tracepoint_fallback_still_closes_every_connection_once(bpf_object, netns):
    ns = netns()
    opts = loader.LoadOptions(tp_btf_target="xtcp2_no_such_tracepoint")
    with running([ns.name], load_options=opts) as (col, cap):
        assert col.bp.attach_kind == "tracepoint"
        conns, deltas = ns.generate_counted(300)
        time.sleep(0.5)
    _check_every_connection(cap.records(), ns, conns, deltas)


V6 = (
    "import socket,sys\n"
    "l=socket.socket(socket.AF_INET6);l.bind(('::1',0));l.listen(64)\n"
    "out=[]\n"
    "for i in range(20):\n"
    "    c=socket.create_connection(('::1',l.getsockname()[1]));a,_=l.accept()\n"
    "    c.sendall(b'x'*(100+i));n=0\n"
    "    while n<100+i: n+=len(a.recv(65536))\n"
    "    a.sendall(b'y'*(50+i));n=0\n"
    "    while n<50+i: n+=len(c.recv(65536))\n"
    "    out.append('%d %d %d %d'%(c.getsockname()[1],l.getsockname()[1],100+i,50+i));c.close();a.close()\n"
    "print('\\n'.join(out))\n"
)


@pytest.mark.parametrize("source", ["bpf_first", "broadcast_first", "bpf_only"])
def test_ipv6_connections_get_exact_close_records(bpf_object, netns, source):
    import socket
    ns = netns()
    kw = {"bpf_first": {}, "broadcast_first": {"bpf_close_wait": 0.5}, "bpf_only": {"use_destroy_groups": False}}[source]
    with running([ns.name], **kw) as (col, cap):
        out = ns.run(sys.executable, "-c", V6).stdout
        time.sleep(0.5)
    conns = [[int(x) for x in line.split()] for line in out.splitlines()]
    closes = _closes(cap.records(), ns.name)
    by = {(r.inet_diag_msg_socket_source_port, r.inet_diag_msg_socket_destination_port): r for r in closes}
    for cport, sport, sent, received in conns:
        c, s = by[(cport, sport)], by[(sport, cport)]
        assert c.inet_diag_msg_family == socket.AF_INET6
        assert c.inet_diag_msg_socket_source == c.inet_diag_msg_socket_destination == socket.inet_pton(socket.AF_INET6, "::1")
        # the client closes first here (FIN_WAIT -> TIME_WAIT): both FINs are acked before CLOSE
        assert c.tcp_info_bytes_acked == sent + 2 and c.tcp_info_bytes_received == received + 1
        assert s.tcp_info_bytes_received == sent + 1 and s.tcp_info_bytes_acked == received + 1
    if source == "broadcast_first":  # (a loaded host may deliver some later than close_wait: bpf records then)
        assert col.stats["close_destroy"] > 0
    else:  # the BPF record goes out at once; its broadcast is recognised as a duplicate
        assert col.stats["close_destroy"] == 0 and col.stats["close_bpf"] >= 2 * len(conns)
