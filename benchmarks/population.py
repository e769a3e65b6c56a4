"""Build a population of established loopback TCP connections, spread over processes.

Each worker process owns one listener (its own port) and `per_proc` connected pairs,
i.e. 2 * per_proc + 1 fds: the hard fd limit here is 20000, so big populations need
several processes. Run it inside a namespace with `ip netns exec NS`.

    python benchmarks/population.py --connections 50000 --procs 6 [--v6-share 0.5]

Prints READY <connections> when all are up, then holds them until stdin closes or
SIGTERM.
"""
from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import signal
import socket
import sys


def _worker(port: int, count: int, v6: bool, ready, stop) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    fam, host = (socket.AF_INET6, "::1") if v6 else (socket.AF_INET, "127.0.0.1")
    ls = socket.socket(fam, socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((host, port))
    ls.listen(4096)
    keep = []
    for i in range(count):
        c = socket.socket(fam, socket.SOCK_STREAM)
        c.connect((host, port))
        s, _ = ls.accept()
        if i % 3 == 0:
            c.send(b"x" * 100)  # some sockets with bytes in flight / received
        keep.append((c, s))
    ready.put(count)
    parent = os.getppid()
    # a parent killed before it could set `stop` must not leave 10,000s of sockets behind
    # (they would slow every later dump on the host): leave when it is gone too
    while not stop.wait(1.0) and os.getppid() == parent:
        pass


def build(connections: int, procs: int, v6_share: float = 0.0, base_port: int = 20000):
    per = -(-connections // procs)
    ctx = mp.get_context("fork")
    ready, stop = ctx.Queue(), ctx.Event()
    workers = []
    left = connections
    for i in range(procs):
        n = min(per, left)
        left -= n
        if n <= 0:
            break
        v6 = i < round(procs * v6_share)
        p = ctx.Process(target=_worker, args=(base_port + i, n, v6, ready, stop), daemon=True)
        p.start()
        workers.append(p)
    total = sum(ready.get(timeout=600) for _ in workers)
    return total, stop, workers


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--procs", type=int, default=6)
    ap.add_argument("--v6-share", type=float, default=0.0)
    ap.add_argument("--base-port", type=int, default=20000)
    args = ap.parse_args()
    total, stop, workers = build(args.connections, args.procs, args.v6_share, args.base_port)
    print(f"READY {total}", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (stop.set(), sys.exit(0)))
    try:
        sys.stdin.read()
    finally:
        stop.set()
        for p in workers:
            p.join(5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
