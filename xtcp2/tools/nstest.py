"""nsTest: network namespace churn driver, to exercise the collector's discovery and cleanup.

    nsTest -initial 50 -sleep 250ms -duration 1h
    nsTest -initial 5 -count 200 -sleep 20ms -traffic -veth -events

Creates -initial named namespaces (/run/netns/PREFIX-PID-N, as `ip netns add`), then
loops: delete the oldest, add a new one, sleep -sleep. -traffic opens a TCP listener and
-conns established connections inside each namespace (loopback), -veth links each to
the host with a veth pair. Stops after -count cycles or -duration (0 = no bound, until
SIGTERM) and deletes everything it created, also on SIGTERM/SIGINT.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Sequence

from ..argparse_go import GoFlagParser, parse_duration, positive_int
from .tcp_server import install_stop_signals, raise_nofile


def build_parser() -> GoFlagParser:
    p = GoFlagParser("nsTest", __doc__.split("\n\n")[0])
    p.flag("initial", type=positive_int, default=1000, help="namespaces created before churning (default 1000)")
    p.flag("sleep", type=parse_duration, default=0.1, help="pause between churn cycles (default 100ms)")
    p.flag("count", type=positive_int, default=0, help="churn cycles (one delete + one add); 0 = unbounded")
    p.flag("duration", type=parse_duration, default=0.0, help="stop churning after this long; 0 = unbounded")
    p.flag("prefix", default="nstest", help="namespace name prefix (default nstest)")
    p.flag("traffic", action="store_true", help="TCP listener + established connections inside each namespace")
    p.flag("conns", type=positive_int, default=2, help="connections per namespace with -traffic (default 2)")
    p.flag("veth", action="store_true", help="a veth pair from the host into each namespace")
    p.flag("events", action="store_true", help="print one line per add/delete: 'add NAME T' / 'del NAME T'")
    p.flag("json", action="store_true", help="print the final summary as JSON")
    return p


@dataclass
class Stats:
    created: int = 0
    deleted: int = 0
    cycles: int = 0
    errors: int = 0
    live_max: int = 0
    first_error: str = ""

    def error(self, what: str) -> None:
        self.errors += 1
        if not self.first_error:
            self.first_error = what
            print(f"nsTest: {what}", file=sys.stderr, flush=True)


@dataclass
class Made:
    name: str
    veth: str = ""
    sockets: list[socket.socket] = field(default_factory=list)


class Churner:
    def __init__(self, args, stats: Stats) -> None:
        from pyroute2 import IPRoute, netns  # imported here: -help must not need pyroute2
        self.netns = netns
        self.IPRoute = IPRoute
        self.args = args
        self.stats = stats
        self.live: deque[Made] = deque()
        self.seq = 0
        self.tag = f"{os.getpid()}"

    def _event(self, kind: str, name: str) -> None:
        if self.args.events:
            print(f"{kind} {name} {time.time():.3f}", flush=True)

    def add(self) -> None:
        name = f"{self.args.prefix}-{self.tag}-{self.seq}"
        self.seq += 1
        try:
            self.netns.create(name)
        except Exception as e:  # noqa: BLE001 - pyroute2 raises several kinds; count and carry on
            self.stats.error(f"create {name}: {e}")
            return
        made = Made(name)
        self.live.append(made)
        self.stats.created += 1
        self.stats.live_max = max(self.stats.live_max, len(self.live))
        try:
            with self.IPRoute(netns=name) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            if self.args.veth:
                made.veth = f"ntv{os.getpid() % 4096:03x}{self.seq - 1:08x}"[:15]
                with self.IPRoute() as ipr:
                    ipr.link("add", ifname=made.veth, kind="veth", peer={"ifname": "eth0", "net_ns_fd": name})
                    ipr.link("set", index=ipr.link_lookup(ifname=made.veth)[0], state="up")
            if self.args.traffic:
                self._traffic(made)
        except Exception as e:  # noqa: BLE001
            self.stats.error(f"set up {name}: {e}")
        self._event("add", name)

    def _traffic(self, made: Made) -> None:
        ls = self.netns.create_socket(made.name, socket.AF_INET, socket.SOCK_STREAM)
        made.sockets.append(ls)
        ls.bind(("127.0.0.1", 0))
        ls.listen(64)
        port = ls.getsockname()[1]
        for _ in range(self.args.conns):
            c = self.netns.create_socket(made.name, socket.AF_INET, socket.SOCK_STREAM)
            made.sockets.append(c)
            c.settimeout(2)
            c.connect(("127.0.0.1", port))
            a, _ = ls.accept()
            made.sockets.append(a)
            c.sendall(b"nsTest hello\n")
            a.recv(64)

    def delete_oldest(self) -> None:
        made = self.live.popleft()
        for s in made.sockets:
            s.close()  # an open socket would keep the namespace alive after the unmount
        if made.veth:
            # Namespace teardown is asynchronous; delete our end now so nothing outlives us.
            try:
                with self.IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=made.veth)
                    if idx:
                        ipr.link("del", index=idx[0])
            except Exception as e:  # noqa: BLE001
                self.stats.error(f"delete veth {made.veth}: {e}")
        try:
            self.netns.remove(made.name)
            self.stats.deleted += 1
        except Exception as e:  # noqa: BLE001
            self.stats.error(f"remove {made.name}: {e}")
        self._event("del", made.name)

    def cleanup(self) -> None:
        while self.live:
            self.delete_oldest()


def _sleep(seconds: float, stop: list[bool]) -> None:
    end = time.monotonic() + seconds
    while not stop[0]:
        left = end - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(left, 0.1))


def run(args, stop: list[bool]) -> Stats:
    stats = Stats()
    churner = Churner(args, stats)
    t0 = time.monotonic()
    try:
        for _ in range(args.initial):
            if stop[0]:
                break
            churner.add()
        while not stop[0]:
            if args.count and stats.cycles >= args.count:
                break
            if args.duration and time.monotonic() - t0 >= args.duration:
                break
            if churner.live:
                churner.delete_oldest()
            churner.add()
            stats.cycles += 1
            _sleep(args.sleep, stop)
    finally:
        churner.cleanup()
    return stats


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.prefix or "/" in args.prefix or len(args.prefix) > 64 or args.prefix.startswith("."):
        print(f"nsTest: error: invalid -prefix {args.prefix!r}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("nsTest: error: must run as root (creates network namespaces)", file=sys.stderr)
        return 1
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        print("nsTest: error: pyroute2 is not installed (pip install 'xtcp2[tools]')", file=sys.stderr)
        return 1
    raise_nofile(0)
    stop = install_stop_signals()
    t0 = time.monotonic()
    stats = run(args, stop)
    summary = dict(vars(stats), seconds=round(time.monotonic() - t0, 3))
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print("nsTest: done " + " ".join(f"{k}={v}" for k, v in summary.items() if k != "first_error"), flush=True)
    return 0 if stats.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
