"""tcp_client: N long-lived TCP connections to tcp_server, each writing -pads bytes every -sleep.

    tcp_client -count 100 -connect 127.0.0.1 -sleep 5s -pads 2048
    tcp_client -count 10 -connect 127.0.0.1 -churn -sleep 100ms   # short connections

Connection i goes to port -port+i (matching tcp_server's listeners). In -churn mode each
worker connects, writes, reads the echo and closes, again and again, so sockets pass
through SYN_SENT, ESTABLISHED, FIN_WAIT and TIME_WAIT. One thread, one selector.
"""
from __future__ import annotations

import selectors
import socket
import sys
import time
from typing import Sequence

from ..argparse_go import GoFlagParser, parse_duration, port_number, positive_int
from .tcp_server import install_stop_signals, raise_nofile


def build_parser() -> GoFlagParser:
    p = GoFlagParser("tcp_client", __doc__.split("\n\n")[0])
    p.flag("count", type=positive_int, default=100, help="connections (default 100)")
    p.flag("connect", default="127.0.0.1", help="server host (default 127.0.0.1)")
    p.flag("port", type=port_number, default=4000, help="first server port (default 4000)")
    p.flag("sleep", type=parse_duration, default=5.0, help="pause between writes (default 5s)")
    p.flag("pads", type=positive_int, default=2048, help="bytes per write (default 2048)")
    p.flag("duration", type=parse_duration, default=0.0, help="stop after this long (default: until SIGTERM)")
    p.flag("churn", action="store_true", help="short connections: connect, write, read echo, close, repeat")
    p.flag("timeout", type=parse_duration, default=5.0, help="connect timeout (default 5s)")
    p.flag("quiet", action="store_true", help="print only errors and the final summary")
    return p


class Stats:
    def __init__(self) -> None:
        self.connects = 0
        self.connect_errors = 0
        self.writes = 0
        self.bytes_sent = 0
        self.bytes_echoed = 0
        self.closed_by_peer = 0

    def line(self) -> str:
        return (f"connects={self.connects} connect_errors={self.connect_errors} writes={self.writes} "
                f"bytes_sent={self.bytes_sent} bytes_echoed={self.bytes_echoed} closed_by_peer={self.closed_by_peer}")


def _resolve(host: str) -> tuple[int, str]:
    info = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    family, _, _, _, addr = info[0]
    return family, addr[0]


def _connect(family: int, host: str, port: int, timeout: float) -> socket.socket:
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect((host, port))
    except OSError:
        s.close()
        raise
    s.setblocking(False)
    return s


def _drain(sel: selectors.BaseSelector, stats: Stats, conns: dict, timeout: float) -> None:
    for key, _ in sel.select(timeout=timeout):
        s = key.fileobj
        try:
            data = s.recv(65536)
        except (BlockingIOError, InterruptedError):
            continue
        except OSError:
            data = b""
        if data:
            stats.bytes_echoed += len(data)
            continue
        stats.closed_by_peer += 1
        sel.unregister(s)
        conns.pop(s, None)
        s.close()


def run_long_lived(args, stop: list[bool], stats: Stats, family: int, host: str, deadline: float) -> None:
    sel = selectors.DefaultSelector()
    conns: dict[socket.socket, int] = {}
    payload = b"\0" * max(1, args.pads)
    try:
        for i in range(args.count):
            if stop[0]:
                return
            try:
                s = _connect(family, host, args.port + i, args.timeout)
            except OSError as e:
                stats.connect_errors += 1
                if stats.connect_errors == 1:
                    print(f"tcp_client: connect {host}:{args.port + i}: {e.strerror or e}", file=sys.stderr)
                continue
            stats.connects += 1
            conns[s] = args.port + i
            sel.register(s, selectors.EVENT_READ)
        if not args.quiet:
            print(f"tcp_client: {len(conns)} connections established", flush=True)
        next_write = time.monotonic()
        while not stop[0] and (deadline == 0 or time.monotonic() < deadline):
            now = time.monotonic()
            if now >= next_write:
                for s in list(conns):
                    try:
                        stats.bytes_sent += s.send(payload)
                        stats.writes += 1
                    except (BlockingIOError, InterruptedError):
                        pass  # peer slow: skip this round for that connection
                    except OSError:
                        stats.closed_by_peer += 1
                        sel.unregister(s)
                        conns.pop(s, None)
                        s.close()
                next_write = now + args.sleep
            wait = max(0.0, min(0.2, next_write - time.monotonic()))
            if conns:
                _drain(sel, stats, conns, wait)
            else:
                time.sleep(wait)
    finally:
        for s in conns:
            s.close()
        sel.close()


def run_churn(args, stop: list[bool], stats: Stats, family: int, host: str, deadline: float) -> None:
    payload = b"\0" * max(1, args.pads)
    while not stop[0] and (deadline == 0 or time.monotonic() < deadline):
        for i in range(args.count):
            if stop[0]:
                return
            try:
                s = _connect(family, host, args.port + i, args.timeout)
            except OSError:
                stats.connect_errors += 1
                continue
            stats.connects += 1
            try:
                s.setblocking(True)
                s.settimeout(args.timeout)
                s.sendall(payload)
                stats.writes += 1
                stats.bytes_sent += len(payload)
                got = 0
                while got < len(payload):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    got += len(chunk)
                stats.bytes_echoed += got
            except OSError:
                stats.closed_by_peer += 1
            finally:
                s.close()
        if args.sleep:
            time.sleep(args.sleep)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1:
        print("tcp_client: error: -count must be >= 1", file=sys.stderr)
        return 2
    if args.port + args.count - 1 > 65535:
        print(f"tcp_client: error: ports {args.port}..{args.port + args.count - 1} exceed 65535", file=sys.stderr)
        return 2
    limit = raise_nofile(args.count)
    if not args.churn and args.count + 64 > limit:
        print(f"tcp_client: error: -count {args.count} needs more file descriptors than the limit {limit}",
              file=sys.stderr)
        return 2
    try:
        family, host = _resolve(args.connect)
    except (OSError, UnicodeError) as e:
        print(f"tcp_client: error: cannot resolve {args.connect!r}: {e}", file=sys.stderr)
        return 2
    stop = install_stop_signals()
    stats = Stats()
    deadline = time.monotonic() + args.duration if args.duration else 0.0
    runner = run_churn if args.churn else run_long_lived
    runner(args, stop, stats, family, host, deadline)
    print(f"tcp_client: done {stats.line()}", flush=True)
    if stats.connects == 0:
        print(f"tcp_client: error: no connection to {args.connect} succeeded", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
