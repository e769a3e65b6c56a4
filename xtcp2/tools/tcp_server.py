"""tcp_server: N TCP echo listeners on consecutive ports, to give the collector real sockets.

    tcp_server -count 100 -bind 127.0.0.1          # ports 4000..4099
    ip netns exec ns1 tcp_server -count 10 -bind 0.0.0.0

One thread, one selector: thousands of listeners and connections cost no threads.
Runs until SIGTERM/SIGINT or -duration. This module also holds the fd-limit and
stop-signal helpers the other load tools share.
"""
from __future__ import annotations

import resource
import selectors
import signal
import socket
import sys
import time
from typing import Sequence

from ..argparse_go import GoFlagParser, parse_duration, port_number, positive_int


def raise_nofile(needed: int) -> int:
    """Lift the soft fd limit to the hard one; return the usable limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def install_stop_signals() -> list[bool]:
    """SIGTERM/SIGINT set a flag instead of killing, so cleanup code runs."""
    stop = [False]

    def handler(signum, frame):  # noqa: ARG001
        stop[0] = True

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def build_parser() -> GoFlagParser:
    p = GoFlagParser("tcp_server", __doc__.split("\n\n")[0])
    p.flag("count", type=positive_int, default=100, help="number of listeners (default 100)")
    p.flag("bind", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.flag("port", type=port_number, default=4000, help="first port (default 4000)")
    p.flag("duration", type=parse_duration, default=0.0, help="stop after this long (default: run until SIGTERM)")
    p.flag("quiet", action="store_true", help="print only errors")
    return p


class EchoServer:
    def __init__(self, bind: str, first_port: int, count: int) -> None:
        self.sel = selectors.DefaultSelector()
        self.listeners: list[socket.socket] = []
        self.conns: set[socket.socket] = set()
        self.accepted = 0
        self.echoed_bytes = 0
        family = socket.AF_INET6 if ":" in bind else socket.AF_INET
        try:
            for port in range(first_port, first_port + count):
                ls = socket.socket(family, socket.SOCK_STREAM)
                ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                ls.bind((bind, port))
                ls.listen(1024)
                ls.setblocking(False)
                self.listeners.append(ls)
                self.sel.register(ls, selectors.EVENT_READ, "listen")
        except OSError:
            self.close()
            raise

    def serve(self, stop: list[bool], deadline: float) -> None:
        while not stop[0] and (deadline == 0 or time.monotonic() < deadline):
            for key, _ in self.sel.select(timeout=0.2):
                sock = key.fileobj
                if key.data == "listen":
                    self._accept(sock)
                else:
                    self._echo(sock)

    def _accept(self, ls: socket.socket) -> None:
        for _ in range(64):
            try:
                conn, _ = ls.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # EMFILE and friends: leave it in the backlog
                return
            conn.setblocking(False)
            self.conns.add(conn)
            self.accepted += 1
            self.sel.register(conn, selectors.EVENT_READ, "conn")

    def _echo(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(65536)
            if data:
                # Echo best effort: a full send buffer drops the rest rather than block all.
                self.echoed_bytes += conn.send(data)
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            pass
        self.sel.unregister(conn)
        self.conns.discard(conn)
        conn.close()

    def close(self) -> None:
        for s in list(self.conns) + self.listeners:
            try:
                self.sel.unregister(s)
            except (KeyError, ValueError):
                pass
            s.close()
        self.conns.clear()
        self.listeners.clear()
        self.sel.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.count < 1:
        print("tcp_server: error: -count must be >= 1", file=sys.stderr)
        return 2
    if args.port + args.count - 1 > 65535:
        print(f"tcp_server: error: ports {args.port}..{args.port + args.count - 1} exceed 65535", file=sys.stderr)
        return 2
    limit = raise_nofile(args.count)
    if args.count + 64 > limit:
        print(f"tcp_server: error: -count {args.count} needs more file descriptors than the limit {limit}",
              file=sys.stderr)
        return 2
    stop = install_stop_signals()
    try:
        server = EchoServer(args.bind, args.port, args.count)
    except OSError as e:
        print(f"tcp_server: error: cannot listen on {args.bind}: {e.strerror or e}", file=sys.stderr)
        return 1
    if not args.quiet:
        print(f"tcp_server: listening on {args.bind} ports {args.port}..{args.port + args.count - 1}", flush=True)
    deadline = time.monotonic() + args.duration if args.duration else 0.0
    try:
        server.serve(stop, deadline)
    finally:
        accepted, echoed = server.accepted, server.echoed_bytes
        server.close()
    if not args.quiet:
        print(f"tcp_server: done accepted={accepted} echoed_bytes={echoed}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
