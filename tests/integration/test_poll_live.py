"""Poll mode against real namespaces and real sockets: every socket exactly once."""
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.marshal.protobuf_list import unmarshal

pytestmark = pytest.mark.root


def run_once(tmp_path, *args: str) -> tuple[list, str]:
    out = tmp_path / "out.bin"
    r = subprocess.run([sys.executable, "-m", "xtcp2", "--once", "-dest", f"file:{out}", "-marshal", "protobufList",
                        "-d", "0", *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = []
    if out.exists():
        for body in unmarshal(out.read_bytes()):
            rows += list(pb.Envelope.FromString(body).row)
    return rows, r.stderr


def kernel_socket_count(ns: str) -> int:
    out = subprocess.run(["ip", "netns", "exec", ns, "ss", "-taH"], capture_output=True, text=True, check=True).stdout
    return len([ln for ln in out.splitlines() if ln.strip()])


def test_every_socket_of_two_namespaces_exactly_once(tmp_path, make_netns, populate):
    a, b = make_netns(), make_netns()
    expected = {a: populate(a), b: populate(b)}
    t0 = time.time_ns()
    rows, err = run_once(tmp_path, "--netns", a, "--netns", b)
    t1 = time.time_ns()
    assert "namespaces=2" in err and "records=" in err
    for ns, socks in expected.items():
        inode = os.stat(f"/run/netns/{ns}").st_ino
        mine = [r for r in rows if r.netns == ns]
        assert all(r.netns_inode == inode for r in mine)
        # everything the kernel has in that namespace, nothing more
        assert len(mine) == kernel_socket_count(ns)
        by_cookie = {}
        for r in mine:
            assert r.inet_diag_msg_socket_cookie not in by_cookie, "socket reported twice"
            by_cookie[r.inet_diag_msg_socket_cookie] = r
        for s in socks:
            r = by_cookie.get(s["cookie"])
            assert r is not None, f"missing {s} in {ns}"
            assert r.inet_diag_msg_family == s["family"]
            assert r.inet_diag_msg_socket_source_port == s["sport"]
            assert r.inet_diag_msg_socket_destination_port == s["dport"]
            assert r.inet_diag_msg_state == s["state"], (s, r.inet_diag_msg_state)
            alen = 4 if s["family"] == 2 else 16
            assert len(r.inet_diag_msg_socket_source) == alen
            if s["state"] == 1:
                assert r.tcp_info_state == 1
                assert 0 < r.tcp_info_rtt < 1_000_000  # µs on loopback
                assert r.tcp_info_snd_mss > 0 and r.tcp_info_rcv_space > 0
                assert r.tcp_info_bytes_acked + r.tcp_info_bytes_received >= 300
                assert r.sk_mem_info_rcv_buf > 0 and r.congestion_algorithm_string
        # the daemon's metadata: no -hostname given, so the host's name; stamped during the run
        assert {r.hostname for r in mine} == {socket.gethostname()}
        assert all(t0 <= r.timestamp_ns <= t1 for r in mine)
        counters = sorted(r.record_counter for r in rows)
        assert len(set(counters)) == len(counters)


def test_ipv6_addresses_and_ports_render(tmp_path, make_netns, populate):
    ns = make_netns()
    socks = populate(ns)
    out = subprocess.run([sys.executable, "-m", "xtcp2", "--once", "-dest", "stdout", "-marshal", "protoJson",
                          "--netns", ns, "-d", "0"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert '"inetDiagMsgSocketSource":"::1"' in out
    assert '"inetDiagMsgSocketSource":"127.0.0.1"' in out
    assert f'"inetDiagMsgSocketSourcePort":{socks[0]["sport"]}' in out


def test_docker_style_bind_mount_is_discovered(tmp_path, make_netns):
    ns = make_netns()
    os.makedirs("/run/docker/netns", exist_ok=True)
    target = f"/run/docker/netns/{ns}-docker"
    open(target, "w").close()
    subprocess.run(["mount", "--bind", f"/run/netns/{ns}", target], check=True)
    try:
        # the same namespace under two names is reported once
        from xtcp2.netns.discover import discover
        found = [r for r in discover().values() if r.inode == os.stat(target).st_ino]
        assert len(found) == 1 and found[0].source in ("netns", "docker")
        _, err = run_once(tmp_path, "--netns", f"{ns}-docker")
        assert "namespaces=1" in err
    finally:
        subprocess.run(["umount", target])
        os.unlink(target)


def test_deleted_namespace_socket_is_released(make_netns, populate):
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon

    ns = make_netns()
    d = Daemon(Config(netns=[ns], dest="null", once=True, debug_level=0))
    try:
        st = d.poll_once()
        assert st.namespaces == 1
        subprocess.run(["ip", "netns", "del", ns], check=True)
        st = d.poll_once()  # reconcile sees it gone and closes its socket
        assert st.namespaces == 0 and not d.table.by_key
    finally:
        d.close()


def test_daemon_loop_polls_and_stops(tmp_path, make_netns):
    ns = make_netns()
    out = tmp_path / "loop.bin"
    r = subprocess.run([sys.executable, "-m", "xtcp2", "-frequency", "200ms", "-maxLoops", "3", "--netns", ns,
                        "-dest", f"file:{out}", "-d", "100", "-promListen", "127.0.0.1:0", "-grpcPort", "0",
                        "--mode", "poll"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("poll ") >= 3


def test_capture_path_writes_replayable_pcap(tmp_path, make_netns, populate):
    ns = make_netns()
    socks = populate(ns)
    cap = tmp_path / "cap"
    rows, _ = run_once(tmp_path, "--netns", ns, "-capturePath", str(cap))
    files = sorted(cap.glob("*.pcap"))
    assert len(files) == 2  # v4 and v6 dumps
    decoded = []
    for f in files:
        r = subprocess.run([sys.executable, "-m", "xtcp2", "decode", str(f)], capture_output=True, text=True, check=True)
        decoded += [ln for ln in r.stdout.splitlines() if ln]
    assert len(decoded) == len(rows)
    assert any(f'"inetDiagMsgSocketCookie":{s["cookie"]}' in "".join(decoded) for s in socks)


@pytest.mark.parametrize("collector", ["netlink", "iter"])
def test_aborted_dumps_do_not_leak_buffers(make_netns, collector):
    """A dump cut short (here by -timeout on every chunk) must return its buffers:
    a leak would deadlock the reader thread after a few polls."""
    from xtcp2.collect import netlink as collect
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon

    ns = make_netns()
    pop = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                            os.path.join(os.path.dirname(__file__), "..", "..", "benchmarks", "population.py"),
                            "--connections", "6000", "--procs", "1"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert pop.stdout.readline().startswith("READY")
        d = Daemon(Config(netns=[ns], dest="null", once=True, debug_level=0, poll_timeout=1e-6, packet_size=4096,
                          collector=collector))
        try:
            for _ in range(2 * collect.CHUNKS_PER_WORKER + 2):
                d.reconcile()
                st = d.collector.poll()
                assert st.errors >= 1  # aborted by the timeout
            # with a leaked buffer the next full dump would wait forever for a free chunk
            d.collector.configure(Config(netns=[ns], dest="null", once=True, debug_level=0, poll_timeout=30,
                                         collector=collector))
            d.reconcile()
            result = []
            t = threading.Thread(target=lambda: result.append(d.collector.poll()), daemon=True)
            t.start()
            t.join(60)
            assert not t.is_alive(), "a full poll after aborted dumps hung: chunk buffers leaked"
            assert result[0].errors == 0 and result[0].sockets == kernel_socket_count(ns)
        finally:
            d.close()
    finally:
        pop.stdin.close()
        pop.wait(30)


def test_placeholder_file_in_run_netns_is_not_a_namespace(make_netns):
    """`ip netns add` creates the file before mounting; a file left unmounted is not on nsfs."""
    from xtcp2.netns.discover import discover

    ns = make_netns()
    placeholder = f"/run/netns/{ns}-placeholder"
    open(placeholder, "w").close()
    try:
        refs = discover(include_proc=False)
        names = {n for r in refs.values() for n in [r.name, *r.aliases]}
        assert ns in names and f"{ns}-placeholder" not in names
        mounted = [r for r in refs.values() if r.name == ns][0]
        assert mounted.mounts == [("netns", f"/run/netns/{ns}")]
    finally:
        os.unlink(placeholder)


def test_namespace_found_by_pid_then_mounted_is_renamed_and_logged(caplog):
    """A namespace seen first through /proc/PID (before `ip netns` mounts it) keeps its
    socket and takes the mount name; the rename is logged under the new name."""
    import logging
    import uuid

    from xtcp2.netns.registry import NamespaceTable

    proc = subprocess.Popen(["unshare", "--net", "sleep", "60"])
    name = f"xt2t-late-{uuid.uuid4().hex[:6]}"
    target = f"/run/netns/{name}"
    table = NamespaceTable(include_proc=True)
    try:
        deadline = time.time() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            assert time.time() < deadline, "unshare did not move the process"
            time.sleep(0.05)
        inode = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
        table.reconcile()
        before = table.by_inode(inode)
        assert before is not None and before.name == f"netns:[{inode}]"
        os.makedirs("/run/netns", exist_ok=True)
        open(target, "w").close()
        subprocess.run(["mount", "--bind", f"/proc/{proc.pid}/ns/net", target], check=True)
        with caplog.at_level(logging.INFO, logger="xtcp2.netns.registry"):
            added, removed = table.reconcile()
        after = table.by_inode(inode)
        assert after is before and (added, removed) == (0, 0)  # same socket, not reopened
        assert after.name == name and after.ref.path == target
        assert re.search(rf"netns {name}: watching \(was netns:\[{inode}\]", caplog.text), caplog.text
    finally:
        table.close()
        subprocess.run(["umount", target], capture_output=True)
        if os.path.exists(target):
            os.unlink(target)
        proc.kill()
        proc.wait()
