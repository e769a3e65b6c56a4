"""BPF object: builds, loads, attaches (tp_btf, classic fallback), delivers real events, unloads cleanly."""
from __future__ import annotations

import json
import re
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from xtcp2.ebpf import tcp_events as E
from xtcp2.ebpf import loader

pytestmark = pytest.mark.root


def _bpftool(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)


def _our_progs(before: set[int] | None = None) -> list[dict]:
    """Our programs loaded since `before` (prog ids): another xtcp2 on the host is not ours."""
    return [p for p in _bpftool("prog", "show") if p.get("name") in {n[:15] for n in loader.prog_names()}
            and (before is None or p["id"] not in before)]


def _prog_ids() -> set[int]:
    return {p["id"] for p in _bpftool("prog", "show")}


def _pair(payload: int, reply: int) -> tuple[int, int]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen()
    c = socket.create_connection(srv.getsockname())
    a, _ = srv.accept()
    c.sendall(b"x" * payload)
    got = 0
    while got < payload:
        got += len(a.recv(65536))
    a.sendall(b"y" * reply)
    got = 0
    while got < reply:
        got += len(c.recv(65536))
    ports = c.getsockname()[1], a.getsockname()[1]
    c.close()
    a.close()
    srv.close()
    return ports


def _drain(bp, want: int, timeout: float = 3.0) -> np.ndarray:
    out = []
    deadline = time.monotonic() + timeout
    while sum(len(x) for x in out) < want and time.monotonic() < deadline:
        bp.reader.wait(0.05)
        out.append(bp.reader.read()["ev"])
    return np.concatenate(out) if out else np.empty(0, E.EVENT_DTYPE)


def _check_pair_events(ev: np.ndarray, cport: int, sport: int, cookie_expected: bool) -> None:
    st = ev[ev["kind"] == E.EV_STATE]
    mine = st[((st["sport"] == cport) & (st["dport"] == sport)) | ((st["sport"] == sport) & (st["dport"] == cport))]
    opens = mine[mine["newstate"] == E.TCP_ESTABLISHED]
    closes = mine[mine["newstate"] == E.TCP_CLOSE]
    assert len(opens) == 2 and len(closes) == 2, mine[["sport", "dport", "oldstate", "newstate"]]
    assert set(mine["netns_ino"]) == {os.stat("/proc/self/ns/net").st_ino}
    assert (closes["flags"] & E.F_COUNTERS).all() and (closes["flags"] & E.F_DURATION).all()
    client = closes[closes["sport"] == cport][0]
    server = closes[closes["sport"] == sport][0]
    # tcp_info semantics: the active opener's bytes_acked counts its SYN; both count the FIN
    assert client["bytes_acked"] == 1000 + 2 and client["bytes_received"] == 300 + 1
    assert server["bytes_received"] == 1000 + 1 and server["bytes_acked"] == 300 + 1
    assert client["duration_ns"] > 0 and client["segs_out"] > 0 and client["family"] == socket.AF_INET
    assert bytes(client["saddr"][:4]) == socket.inet_aton("127.0.0.1")
    if cookie_expected:
        assert client["cookie"] != 0 and client["cookie"] != server["cookie"]
        assert set(opens["cookie"]) == set(closes["cookie"])


def test_load_attach_events_and_clean_unload(bpf_object):
    before = _prog_ids()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=1 << 20), bpf_object)
    try:
        assert bp.attach_kind == "tp_btf" and not bp.fallback_reason
        progs = _our_progs(before)
        names = {p["name"] for p in progs}
        assert {"xtcp2_state_btf", "xtcp2_fork", "xtcp2_unshare", "xtcp2_setns"} <= names
        assert "xtcp2_state_tp" not in names  # the fallback never runs alongside
        prog_ids = {p["id"] for p in progs}
        map_ids = {m for p in progs for m in p.get("map_ids", [])}
        assert map_ids
        cport, sport = _pair(1000, 300)
        ev = _drain(bp, 5)
        _check_pair_events(ev, cport, sport, cookie_expected=True)
        fails, submitted = bp.drop_counts()
        assert fails == 0 and submitted >= 5
    finally:
        bp.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left_p = prog_ids & {p["id"] for p in _bpftool("prog", "show")}
        left_m = map_ids & {m["id"] for m in _bpftool("map", "show")}
        if not left_p and not left_m:
            break
        time.sleep(0.1)
    assert not left_p and not left_m, (left_p, left_m)
    assert not [ln for ln in _bpftool("link", "show") if ln.get("prog_id") in prog_ids]


def test_missing_tp_btf_falls_back_to_classic_tracepoint(bpf_object):
    # An attach target that does not exist makes the tp_btf load fail in libbpf/kernel.
    before = _prog_ids()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=1 << 20, tp_btf_target="xtcp2_no_such_tracepoint"), bpf_object)
    try:
        assert bp.attach_kind == "tracepoint"
        assert "xtcp2_no_such_tracepoint" in bp.fallback_reason or "load" in bp.fallback_reason
        names = {p["name"] for p in _our_progs(before)}
        assert "xtcp2_state_tp" in names and "xtcp2_state_btf" not in names
        cport, sport = _pair(1000, 300)
        ev = _drain(bp, 5)
        _check_pair_events(ev, cport, sport, cookie_expected=False)
    finally:
        bp.close()


def test_cookie_and_netns_match_inet_diag_in_a_namespace(bpf_object, netns):
    ns = netns()
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=1 << 20), bpf_object)
    try:
        gen = ns.popen("python3", "-c", (
            "import socket,sys;l=socket.socket();l.bind(('127.0.0.1',0));l.listen();"
            "c=socket.create_connection(l.getsockname());a,_=l.accept();"
            "print(c.getsockname()[1],l.getsockname()[1],flush=True);sys.stdin.read()"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        try:
            cport, lport = map(int, gen.stdout.readline().split())
            ev = _drain(bp, 3)
            ss = ns.run("ss", "-teH", "state", "established").stdout
        finally:
            gen.stdin.close()
            gen.wait(10)
        st = ev[(ev["kind"] == E.EV_STATE) & (ev["netns_ino"] == ns.inode)]
        opens = st[st["newstate"] == E.TCP_ESTABLISHED]
        assert len(opens) == 2
        # ss -e prints the inet_diag cookie as sk:<hex>
        cookies_ss = {int(m.group(1)): int(m.group(2), 16)
                      for m in re.finditer(r"127\.0\.0\.1:(\d+)\s+\S+\s.*?\bsk:([0-9a-f]+)", ss)}
        assert set(cookies_ss) == {cport, int(opens[opens["sport"] != cport][0]["sport"])}
        for e in opens:
            assert cookies_ss[int(e["sport"])] == int(e["cookie"])
        # the netns event fires for the namespace `ip netns exec` entered (setns)
        nsev = ev[ev["kind"] == E.EV_NETNS]
        assert ns.inode in set(nsev["netns_ino"].tolist())
    finally:
        bp.close()


def test_tiny_ring_buffer_counts_reservation_failures(bpf_object):
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=4096, watch_netns=False), bpf_object)
    try:
        for _ in range(40):  # 6 events each (listen, 2 opens, 3 closes), 184 bytes, 4 KiB ring nobody reads
            _pair(10, 10)
        fails, submitted = bp.drop_counts()
        assert submitted == (4096 - 1) // E.RECORD_STRIDE  # the kernel never fills the ring completely
        assert fails >= 240 - submitted  # other host traffic only adds events
        got = bp.reader.read()
        assert len(got) == submitted
    finally:
        bp.close()


def test_bad_inputs_are_one_line_errors(tmp_path):
    from xtcp2.errors import Xtcp2Error
    with pytest.raises(Xtcp2Error, match="not found.*make -C bpf"):
        loader.load(path=tmp_path / "missing.bpf.o")
    with pytest.raises(Xtcp2Error, match="power of two"):
        loader.load(loader.LoadOptions(ringbuf_bytes=5000))


def test_mode_selection_says_which_and_why(bpf_object):
    from xtcp2.ebpf import select_mode
    assert select_mode("poll") == (False, "mode poll")
    use, msg = select_mode("auto")
    assert use and "tp_btf" in msg
    assert select_mode("bpf")[0]
    # without capabilities: auto falls back to poll, bpf refuses with the capability to grant
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from xtcp2.ebpf import select_mode\n"
            "print(select_mode('auto')[1])\n"
            "try:\n    select_mode('bpf')\nexcept Exception as e:\n    print(type(e).__name__, e)\n") % str(bpf_object.parents[1])
    out = subprocess.run(["setpriv", "--inh-caps=-all", "--bounding-set=-all", sys.executable, "-c", code],
                         capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    assert lines[0].startswith("mode auto: using poll (bpf unavailable: loading BPF needs root or CAP_BPF"), out
    assert lines[1].startswith("Xtcp2Error --mode bpf cannot run here: loading BPF needs root or CAP_BPF"), out


def test_records_that_wrap_past_the_end_of_the_ring_read_whole(bpf_object):
    # The data pages are mapped once, not twice in a row: a read crossing the end of
    # the ring joins two pieces. Connections one at a time, read after each, until
    # the consumer position has gone round a 16 KiB ring (70 records) several times.
    size = 16384
    bp = loader.load(loader.LoadOptions(ringbuf_bytes=size, watch_netns=False), bpf_object)
    try:
        pairs, seen, got = [], set(), []
        deadline = time.monotonic() + 20
        while bp.reader._cons.value < 4 * size and time.monotonic() < deadline:
            pairs.append(_pair(10, 10))
            ev = _drain(bp, 6, timeout=0.5)
            got.append(ev)
        assert bp.reader._cons.value >= 4 * size, "the ring did not wrap"
        ev = np.concatenate(got)
        assert set(ev["kind"].tolist()) <= {E.EV_STATE, E.EV_NETNS}
        st = ev[ev["kind"] == E.EV_STATE]
        assert set(st["family"].tolist()) <= {socket.AF_INET, socket.AF_INET6}
        for a, b in zip(st["sport"].tolist(), st["dport"].tolist()):
            seen.add((a, b))
        fails, _ = bp.drop_counts()
        if fails == 0:  # other traffic on the host can overrun so small a ring
            for cport, sport in pairs:
                assert (cport, sport) in seen and (sport, cport) in seen, (cport, sport)
    finally:
        bp.close()
