"""TCP on /metrics (xtcp2/tcp_metrics.py) against `ss` in real namespaces, scraped from a
real xtcp2 process; counters against bytes a test connection really moved."""
from __future__ import annotations

import collections
import os
import socket
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ..daemon_process import end

pytestmark = pytest.mark.root

# Holds: 1 listener, `est` established pairs (1000 bytes each way moved), `half` pairs
# where the client half-closed (client FIN-WAIT-2, server CLOSE-WAIT), `tw` pairs closed
# client first (client TIME-WAIT).
HOLDER = r"""
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
est, half, tw = (int(a) for a in sys.argv[1:4])
lst = socket.socket(); lst.bind(("127.0.0.1", 6000)); lst.listen(4096)
keep = []
def pair():
    c = socket.create_connection(("127.0.0.1", 6000)); s, _ = lst.accept(); return c, s
for _ in range(est):
    c, s = pair(); c.sendall(b"x" * 1000); s.recv(1000); keep += [c, s]
for _ in range(half):
    c, s = pair(); c.shutdown(socket.SHUT_WR); keep += [c, s]
for _ in range(tw):
    c, s = pair(); c.close(); s.recv(10); s.close()
time.sleep(0.3)
print("ready", flush=True)
sys.stdin.read()
"""

# One connection moving N bytes each way, then closed by both sides.
TRANSFER = r"""
import socket, sys, threading
n = int(sys.argv[1])
lst = socket.socket(); lst.bind(("127.0.0.1", 6001)); lst.listen(1)
c = socket.create_connection(("127.0.0.1", 6001)); s, _ = lst.accept()
def pump(src, dst):
    got = 0
    while got < n:
        got += len(src.recv(65536))
t = threading.Thread(target=pump, args=(s, c)); t.start()
c.sendall(b"a" * n); t.join()
s.sendall(b"b" * n); pump(c, s)
c.close(); s.close(); lst.close()
"""

SS_STATE = {"ESTAB": "established", "SYN-SENT": "syn_sent", "SYN-RECV": "syn_recv", "FIN-WAIT-1": "fin_wait1",
            "FIN-WAIT-2": "fin_wait2", "TIME-WAIT": "time_wait", "CLOSE-WAIT": "close_wait",
            "LAST-ACK": "last_ack", "LISTEN": "listen", "CLOSING": "closing", "UNCONN": "close"}


class Netns:
    def __init__(self, est: int, half: int, tw: int) -> None:
        self.name = f"viewfmt-{uuid.uuid4().hex[:8]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        self.holder = subprocess.Popen(["ip", "netns", "exec", self.name, sys.executable, "-c", HOLDER,
                                        str(est), str(half), str(tw)],
                                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.holder.stdout.readline().strip() == "ready"

    def ss_states(self) -> collections.Counter:
        out = subprocess.run(["ip", "netns", "exec", self.name, "ss", "-tanH"], capture_output=True, text=True,
                             check=True).stdout
        return collections.Counter(SS_STATE[line.split()[0]] for line in out.splitlines() if line.strip())

    def run(self, code: str, *args: str) -> None:
        subprocess.run(["ip", "netns", "exec", self.name, sys.executable, "-c", code, *args], check=True, timeout=60)

    def close(self) -> None:
        self.holder.kill()
        self.holder.wait()
        subprocess.run(["ip", "netns", "del", self.name], check=False)


@pytest.fixture
def netns_pair():
    made = []
    try:
        made.append(Netns(est=20, half=5, tw=5))
        made.append(Netns(est=3, half=0, tw=0))
        yield made
    finally:
        for ns in made:
            ns.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Xtcp2Process:
    """The real `xtcp2` command, poll mode, metrics on a free port."""

    def __init__(self, *netns: str, extra: tuple[str, ...] = ()) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "xtcp2", "--mode", "poll", "-frequency", "500ms", "-timeout", "400ms",
                "-promListen", f"127.0.0.1:{self.port}", "-grpcPort", "0", "-dest", "null", *extra]
        for n in netns:
            argv += ["--netns", n]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.url = f"http://127.0.0.1:{self.port}/metrics"

    def scrape(self) -> dict:
        text = urllib.request.urlopen(self.url, timeout=5).read().decode()
        out = {"_text": text}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                out.setdefault(s.name, []).append((s.labels, s.value))
        return out

    def wait_polls(self, n: int, timeout: float = 30) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"xtcp2 exited {self.proc.returncode}: {self.proc.stderr.read()[-2000:]}")
            try:
                m = self.scrape()
                if m.get("xtcp2_polls_total", [({}, 0)])[0][1] >= n:
                    return m
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"fewer than {n} polls in {timeout} s")

    def stop(self) -> None:
        end(self.proc, 15)


@pytest.fixture
def xtcp2_process():
    running = []

    def start(*netns: str, extra: tuple[str, ...] = ()) -> Xtcp2Process:
        p = Xtcp2Process(*netns, extra=extra)
        running.append(p)
        return p

    yield start
    for p in running:
        p.stop()


def by(m: dict, name: str, **want) -> list[tuple[dict, float]]:
    return [(lab, v) for lab, v in m.get(name, []) if all(lab.get(k) == v for k, v in want.items())]


def one(m: dict, name: str, **want) -> float:
    got = by(m, name, **want)
    assert len(got) == 1, f"{name}{want}: {got}"
    return got[0][1]


def test_socket_gauges_equal_ss(netns_pair, xtcp2_process):
    ns, small = netns_pair
    d = xtcp2_process(ns.name, small.name)
    d.wait_polls(1)
    want = ns.ss_states()
    assert want["established"] == 40 and want["close_wait"] == 5 and want["time_wait"] == 5
    m = d.wait_polls(one(d.scrape(), "xtcp2_polls_total") + 2)
    for ns_ in (ns, small):
        want = ns_.ss_states()
        got = {lab["state"]: v for lab, v in by(m, "xtcp2_tcp_sockets", netns=ns_.name)}
        assert len(got) == 12, got  # every state present, zeros included
        assert {k: v for k, v in got.items() if v} == dict(want), ns_.name
        # RTT: every socket that has one (not listeners, time-wait, request sockets)
        with_rtt = sum(v for k, v in want.items() if k not in ("listen", "time_wait", "syn_recv"))
        assert one(m, "xtcp2_tcp_rtt_seconds_bucket", netns=ns_.name, le="+Inf") == with_rtt
        assert one(m, "xtcp2_tcp_rtt_seconds_gcount", netns=ns_.name) == with_rtt
        buckets = [v for lab, v in by(m, "xtcp2_tcp_rtt_seconds_bucket", netns=ns_.name)]
        assert buckets == sorted(buckets)
        assert 0 < one(m, "xtcp2_tcp_rtt_seconds_gsum", netns=ns_.name) < with_rtt * 0.2  # loopback: < 200 ms each
        for counter in ("xtcp2_tcp_retransmits_total", "xtcp2_tcp_sent_bytes_total", "xtcp2_tcp_received_bytes_total",
                        "xtcp2_tcp_opens_total", "xtcp2_tcp_closes_total"):
            one(m, counter, netns=ns_.name, container="")
    # labelled series exist at zero from the first scrape: "other" before any overflow, the
    # error kinds before any error, the destination's before it sent anything
    assert one(m, "xtcp2_tcp_closes_total", netns="other") == 0
    assert {lab["kind"] for lab, _ in m["xtcp2_netlink_errors_total"]} >= {
        "error", "enobufs", "timeout", "truncated", "interrupted", "poll_timeout"}
    assert {lab["what"] for lab, _ in m["xtcp2_decode_errors_total"]} == {"inet_diag_msg", "rtattr"}
    for name in ("xtcp2_dest_dropped_records_total", "xtcp2_dest_errors_total", "xtcp2_dest_queue_depth"):
        one(m, name, dest="null")
    # build info; no _created series; process metrics once (ours), not also prometheus_client's
    info = by(m, "xtcp2_build_info")
    assert len(info) == 1 and info[0][1] == 1 and info[0][0]["version"]
    text = m["_text"]
    assert "_created" not in text
    assert "\nprocess_cpu_seconds_total" not in text and "xtcp2_process_cpu_seconds_total" in text
    # upstream's names, derived from ours
    for _ in range(20):  # one scrape reads both while a poll may land in between: take a quiet one
        p = one(m, "xtcp_counts", function="Netlinker", variable="p", type="count")
        if p == sum(v for _, v in m["xtcp2_sockets_total"]):
            break
        m = d.scrape()
    assert p == sum(v for _, v in m["xtcp2_sockets_total"]) > 0
    assert one(m, "xtcp_gauge") == one(m, "xtcp2_namespaces") == 2
    assert one(m, "xtcp_histograms", quantile="0.99") > 0


def kernel_retrans_segs(netns: str) -> int:
    """Tcp RetransSegs of a namespace (/proc/net/snmp read inside it): what the kernel counted."""
    out = subprocess.run(["ip", "netns", "exec", netns, "cat", "/proc/net/snmp"], capture_output=True,
                         text=True, check=True).stdout
    head, values = [line.split() for line in out.splitlines() if line.startswith("Tcp:")][:2]
    return int(values[head.index("RetransSegs")])


def test_counters_count_what_a_connection_moved(netns_pair, xtcp2_process):
    ns, _ = netns_pair
    d = xtcp2_process(ns.name)
    m = d.wait_polls(3)
    before = {k: one(m, k, netns=ns.name) for k in ("xtcp2_tcp_sent_bytes_total", "xtcp2_tcp_received_bytes_total",
                                                    "xtcp2_tcp_closes_total", "xtcp2_tcp_retransmits_total")}
    retrans_before = kernel_retrans_segs(ns.name)
    n = 3_000_000
    ns.run(TRANSFER, str(n))
    # the close records (destroy groups) carry the final counters; then one more poll
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = d.scrape()
        if one(m, "xtcp2_tcp_closes_total", netns=ns.name) >= before["xtcp2_tcp_closes_total"] + 3:
            break
        time.sleep(0.2)
    m = d.wait_polls(one(m, "xtcp2_polls_total") + 1)
    sent = one(m, "xtcp2_tcp_sent_bytes_total", netns=ns.name) - before["xtcp2_tcp_sent_bytes_total"]
    recv = one(m, "xtcp2_tcp_received_bytes_total", netns=ns.name) - before["xtcp2_tcp_received_bytes_total"]
    closes = one(m, "xtcp2_tcp_closes_total", netns=ns.name) - before["xtcp2_tcp_closes_total"]
    # both ends sent n and received n; counted once each (increases, not totals), FINs aside
    assert 2 * n <= sent <= 2 * n + 4, sent
    assert 2 * n <= recv <= 2 * n + 4, recv
    assert closes == 3  # both ends and the listener
    # retransmits equal the namespace's own SNMP count over the transfer (loopback rarely
    # retransmits, but a loaded host can: tail-loss probes)
    retrans = one(m, "xtcp2_tcp_retransmits_total", netns=ns.name) - before["xtcp2_tcp_retransmits_total"]
    assert retrans == kernel_retrans_segs(ns.name) - retrans_before


def test_namespaces_beyond_the_cap_are_other(netns_pair, xtcp2_process):
    ns, small = netns_pair
    d = xtcp2_process(ns.name, small.name, extra=("-metricsMaxNetns", "1"))
    m = d.wait_polls(3)
    labelled = {lab["netns"] for lab, _ in m["xtcp2_tcp_sockets"]}
    assert labelled == {"other", ns.name} or labelled == {"other", small.name}, labelled
    total = sum(v for _, v in m["xtcp2_tcp_sockets"])
    assert total == sum(ns.ss_states().values()) + sum(small.ss_states().values())
    alone = ns if ns.name in labelled else small
    other = small if alone is ns else ns
    assert {lab["state"]: v for lab, v in by(m, "xtcp2_tcp_sockets", netns="other") if v} == dict(other.ss_states())


def test_bad_cap_is_one_line_exit_2():
    r = subprocess.run([sys.executable, "-m", "xtcp2", "-metricsMaxNetns", "0", "--once"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "metrics_max_netns" in r.stderr


# K connections to a listener, 5000 bytes each, held 1 s, then closed; then the listener.
CONNS = r"""
import socket, sys, time, subprocess
k = int(sys.argv[1])
lst = socket.socket(); lst.bind(("127.0.0.1", 7000)); lst.listen(128)
pairs = []
for _ in range(k):
    c = socket.create_connection(("127.0.0.1", 7000)); s, _ = lst.accept(); c.sendall(b"x" * 5000); s.recv(5000)
    pairs.append((c, s))
time.sleep(1.0)
for c, s in pairs:
    c.close(); s.close()
time.sleep(0.5)
lst.close()
"""


@pytest.fixture
def bare_netns():
    """A namespace with no socket at all (lo up), so its only sockets are a test's."""
    ns = Netns.__new__(Netns)
    ns.name = f"viewfmt-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", ns.name], check=True)
    try:
        subprocess.run(["ip", "netns", "exec", ns.name, "ip", "link", "set", "lo", "up"], check=True)
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], check=False)


def test_bpf_mode_counts_opens_and_closes(bare_netns, xtcp2_process):
    ns = bare_netns
    d = xtcp2_process(ns.name, extra=("--mode", "bpf", "-frequency", "1s", "-resync", "300s"))
    m = d.wait_polls(1)
    before = {k: one(m, k, netns=ns.name) for k in ("xtcp2_tcp_opens_total", "xtcp2_tcp_closes_total",
                                                    "xtcp2_tcp_sent_bytes_total")}
    k = 10
    ns.run(CONNS, str(k))
    want = 2 * k + 1  # both ends of every connection, and the listener
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        m = d.scrape()
        if one(m, "xtcp2_tcp_closes_total", netns=ns.name) - before["xtcp2_tcp_closes_total"] >= want:
            break
        time.sleep(0.2)
    assert one(m, "xtcp2_tcp_opens_total", netns=ns.name) - before["xtcp2_tcp_opens_total"] == want
    assert one(m, "xtcp2_tcp_closes_total", netns=ns.name) - before["xtcp2_tcp_closes_total"] == want
    sent = one(m, "xtcp2_tcp_sent_bytes_total", netns=ns.name) - before["xtcp2_tcp_sent_bytes_total"]
    assert k * 5000 <= sent < k * 5000 + 100, sent  # open, refresh and close records of a socket count it once
    # the gauges follow at the next refresh (-frequency), long before the next resync,
    # although no socket is left to refresh the namespace for: what closed is gone
    want_states = dict(ns.ss_states())
    deadline = time.monotonic() + 6
    while time.monotonic() < deadline:
        got = {lab["state"]: v for lab, v in by(d.scrape(), "xtcp2_tcp_sockets", netns=ns.name) if v}
        if got == want_states:
            break
        time.sleep(0.2)
    assert got == want_states
