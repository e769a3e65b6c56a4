"""bpf mode names a socket's owner from the kernel: the task in connect() (taken at
SYN_SENT, in process context) or in listen(); accepted sockets fall back to the /proc walk.

The connecting process hands its socket to this test over SCM_RIGHTS and exits before
the daemon looks: a /proc walk can then only find this test holding it, so the right
answer can come from the connect event alone.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading

from prometheus_client import REGISTRY

from xtcp2.config import Config
from xtcp2.daemon import Daemon
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from tests.waiting import wait_for

T = pb.XtcpFlatRecord
PORT = 8099

# a child that renames itself (its comm), then listens and accepts, or connects and hands
# its socket over and exits
CHILD = r"""
import ctypes, socket, sys, time
ctypes.CDLL(None).prctl(15, sys.argv[1].encode(), 0, 0, 0)   # PR_SET_NAME
if sys.argv[2] == "listen":
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("127.0.0.1", int(sys.argv[3])))
    ls.listen()
    print("listening", flush=True)
    held = [ls.accept()[0] for _ in range(1)]
    sys.stdin.read()
else:
    c = socket.create_connection(("127.0.0.1", int(sys.argv[3])))
    u = socket.socket(socket.AF_UNIX)
    u.connect(sys.argv[4])
    socket.send_fds(u, [b"x"], [c.fileno()])
"""


def owners_learned() -> float:
    return REGISTRY.get_sample_value("xtcp2_identity_owners_from_events_total") or 0.0


def test_owner_taken_at_connect_and_listen(bpf_object, netns, tmp_path):
    ns = netns()
    cfg = Config(mode="bpf", netns=[ns.name], dest="null", poll_frequency=30.0, poll_timeout=5.0, debug_level=0)
    d = Daemon(cfg, use_bpf=True)
    recs: list = []
    d.add_listener(lambda env: recs.extend(env.message().row))
    t = threading.Thread(target=d.run, daemon=True)
    t.start()
    listener = None
    held = None
    try:
        assert d.mode.ready.wait(60), "bpf start-up resync did not finish"
        before = owners_learned()
        listener = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", CHILD, "xtcp2-listen",
                                     "listen", str(PORT)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert listener.stdout.readline().strip() == "listening"
        path = str(tmp_path / "fd.sock")
        u = socket.socket(socket.AF_UNIX)
        u.bind(path)
        u.listen()
        conn = subprocess.Popen(["ip", "netns", "exec", ns.name, sys.executable, "-c", CHILD, "xtcp2-conn",
                                 "connect", str(PORT), path])
        peer, _ = u.accept()
        _, fds, _, _ = socket.recv_fds(peer, 1, 1)
        held = socket.socket(fileno=fds[0])
        assert conn.wait(30) == 0
        peer.close()
        u.close()
        client_port = held.getsockname()[1]

        def record(state: int, sport: int):
            return [r for r in list(recs) if r.trigger == T.TRIGGER_OPEN and r.tcp_info_state == state
                    and r.inet_diag_msg_socket_source_port == sport]

        ls = wait_for(lambda: record(10, PORT), what="the LISTEN record")[0]
        active = wait_for(lambda: record(1, client_port), what="the connecting end's OPEN record")[0]
        wait_for(lambda: [r for r in record(1, PORT) if r.inet_diag_msg_socket_destination_port == client_port],
                 what="the accepted end's OPEN record")

        def accepted_named():
            # a passive open has no process context: the /proc walk names it, in slices
            # between events (on a slow guest, maybe only at a later record: resync for one)
            named = [r for r in list(recs) if r.inet_diag_msg_socket_source_port == PORT
                     and r.inet_diag_msg_socket_destination_port == client_port and r.pid]
            if not named:
                d.trigger_poll()
            return named

        accepted = wait_for(accepted_named, timeout=60, what="the accepted end named", interval=1.0)[0]
        assert (ls.pid, ls.comm) == (listener.pid, "xtcp2-listen"), ls
        # the connecting process is gone and this test holds the socket: only the event knew
        assert (active.pid, active.comm) == (conn.pid, "xtcp2-conn"), active
        assert active.inet_diag_msg_inode == os.fstat(held.fileno()).st_ino
        assert (accepted.pid, accepted.comm) == (listener.pid, "xtcp2-listen"), accepted
        assert owners_learned() - before >= 2
    finally:
        d.stop()
        t.join(30)
        d.close()
        if held is not None:
            held.close()
        if listener is not None:
            listener.kill()
            listener.wait()
