"""Run inside a namespace: make TCP sockets in known states, print them as JSON, wait.

Each socket is reported with family, local/peer port, expected state and its kernel
cookie (SO_COOKIE), which equals inet_diag's idiag_cookie. Exits when stdin closes.
"""
import json
import socket
import struct
import sys
import time

SO_COOKIE = 57


def cookie(s: socket.socket) -> int:
    return struct.unpack("=Q", s.getsockopt(socket.SOL_SOCKET, SO_COOKIE, 8))[0]


def info(s, state, family):
    local = s.getsockname()[1]
    try:
        peer = s.getpeername()[1]
    except OSError:
        peer = 0
    return {"family": family, "sport": local, "dport": peer, "state": state, "cookie": cookie(s)}


def main() -> None:
    out, keep = [], []
    for fam, host, fname in ((socket.AF_INET, "127.0.0.1", 2), (socket.AF_INET6, "::1", 10)):
        ls = socket.socket(fam, socket.SOCK_STREAM)
        ls.bind((host, 0))
        ls.listen(16)
        out.append(info(ls, 10, fname))
        # ESTABLISHED pair with data both ways
        c = socket.create_connection((host, ls.getsockname()[1]))
        s, _ = ls.accept()
        c.sendall(b"a" * 5000)
        s.recv(65536)
        s.sendall(b"b" * 300)
        c.recv(65536)
        out += [info(c, 1, fname), info(s, 1, fname)]
        keep += [c, s]
        # half closed: client FIN_WAIT2, server CLOSE_WAIT
        c2 = socket.create_connection((host, ls.getsockname()[1]))
        s2, _ = ls.accept()
        c2.shutdown(socket.SHUT_WR)
        time.sleep(0.05)
        out += [info(c2, 5, fname), info(s2, 8, fname)]
        keep += [c2, s2, ls]
    # SYN_SENT: towards an address routed to a dummy device that never answers
    syn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    syn.setblocking(False)
    try:
        syn.connect(("10.77.0.2", 9))
    except BlockingIOError:
        pass
    rec = info(syn, 2, 2)
    rec["dport"] = 9  # not connected yet: getpeername() fails
    out.append(rec)
    keep.append(syn)
    print(json.dumps(out), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
