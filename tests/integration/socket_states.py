"""Run inside a namespace made by make_netns: build TCP sockets in the states that need a
stuck peer, and sockets with congestion control / TOS / TCLASS set; print them as JSON.

How each state is held (all on this namespace's own kernel, nothing simulated):
  TIME_WAIT  the client closes first, then the server: the client keeps TIME_WAIT (60 s).
  FIN_WAIT1  the peer never reads; the client fills its send path (zero window), then
             shutdown(SHUT_WR): the FIN waits behind unsent data and is never acked.
  LAST_ACK   the client shuts down first (server in CLOSE_WAIT); the server fills the
             never-reading client's window, then shuts down: its FIN waits the same way.
  CLOSING    both ends fill each other's window and shut down (both FIN_WAIT1); then one
             end (A) reads everything: B's data and FIN reach A while A's own FIN is still
             stuck behind data B never reads, so A goes FIN_WAIT1 -> CLOSING.
  SYN_RECV   a raw socket sends a SYN from 10.77.0.2 (the unanswered veth route of
             make_netns) to a listener on 10.77.0.1: the SYN-ACK goes out the veth whose
             peer is down, so the handshake never completes and the request socket stays.
Exits when stdin closes.
"""
import json
import os
import socket
import struct
import sys
import time

TCP_CONGESTION = 13


def fill(sock: socket.socket) -> None:
    """Send until the kernel takes no more (the peer does not read)."""
    sock.setblocking(False)
    chunk = b"z" * 65536
    idle = 0
    while idle < 3:
        try:
            sock.send(chunk)
            idle = 0
        except BlockingIOError:
            idle += 1
            time.sleep(0.05)
    sock.setblocking(True)


def pair(ls: socket.socket, host: str, *opts) -> tuple[socket.socket, socket.socket]:
    c = socket.socket(ls.family, socket.SOCK_STREAM)
    for level, name, value in opts:
        c.setsockopt(level, name, value)
    c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # small windows fill fast
    c.connect((host, ls.getsockname()[1]))
    s, _ = ls.accept()
    return c, s


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def raw_syn(src: str, sport: int, dst: str, dport: int) -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)  # implies IP_HDRINCL
    saddr, daddr = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 12345, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = saddr + daddr + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0, 64, socket.IPPROTO_TCP, 0, saddr, daddr)
    s.sendto(ip + tcp, (dst, 0))
    s.close()


def main() -> None:
    out, keep = {}, []
    ls = socket.socket()
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    ls.bind(("127.0.0.1", 0))
    ls.listen(64)
    keep.append(ls)

    c, s = pair(ls, "127.0.0.1")
    tw_port = c.getsockname()[1]
    c.close()
    time.sleep(0.05)
    s.close()
    out["time_wait"] = {"sport": tw_port, "dport": ls.getsockname()[1]}

    c, s = pair(ls, "127.0.0.1")
    fill(c)
    c.shutdown(socket.SHUT_WR)
    out["fin_wait1"] = {"sport": c.getsockname()[1]}
    keep += [c, s]

    c, s = pair(ls, "127.0.0.1")
    c.shutdown(socket.SHUT_WR)
    time.sleep(0.05)
    fill(s)
    s.shutdown(socket.SHUT_WR)
    out["last_ack"] = {"sport": s.getsockname()[1], "dport": s.getpeername()[1]}
    keep += [c, s]

    a, b = pair(ls, "127.0.0.1")
    b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    fill(a)
    fill(b)
    a.shutdown(socket.SHUT_WR)
    b.shutdown(socket.SHUT_WR)
    a.setblocking(False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # read until b's FIN (recv returns b"")
        try:
            if a.recv(65536) == b"":
                break
        except BlockingIOError:
            time.sleep(0.01)
    time.sleep(0.1)
    out["closing"] = {"sport": a.getsockname()[1]}
    keep += [a, b]

    syn_ls = socket.socket()
    syn_ls.bind(("10.77.0.1", 0))
    syn_ls.listen(16)
    raw_syn("10.77.0.2", 40404, "10.77.0.1", syn_ls.getsockname()[1])
    out["syn_recv"] = {"sport": syn_ls.getsockname()[1], "dport": 40404}
    keep.append(syn_ls)

    # congestion control and DSCP/ECN bytes on established connections
    cc = {}
    for name in ("bbr", "vegas", "dctcp"):
        try:
            c, s = pair(ls, "127.0.0.1", (socket.IPPROTO_TCP, TCP_CONGESTION, name.encode()))
        except OSError as e:  # ENOENT: not built in and not loadable here
            cc[name] = {"error": os.strerror(e.errno)}
            continue
        c.sendall(b"x" * 100000)
        s.recv(1 << 20)
        cc[name] = {"sport": c.getsockname()[1]}
        keep += [c, s]
    out["cc"] = cc
    c, s = pair(ls, "127.0.0.1", (socket.IPPROTO_IP, socket.IP_TOS, 0x28))
    out["tos"] = {"sport": c.getsockname()[1], "value": 0x28}
    keep += [c, s]
    ls6 = socket.socket(socket.AF_INET6)
    ls6.bind(("::1", 0))
    ls6.listen(4)
    c, s = pair(ls6, "::1", (socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0x48))
    out["tclass"] = {"sport": c.getsockname()[1], "value": 0x48}
    keep += [c, s, ls6]

    print(json.dumps(out), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
