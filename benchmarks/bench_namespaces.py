"""Poll cost against the number of namespaces, next to a big host population.

Builds `--connections` loopback connections (2x sockets) in one namespace (the "host"
population every inet_diag dump walks past), then `--max-namespaces` small
namespaces of which every `--populated-every`-th holds `--small` connections and the
rest are empty. For 1, 10, 100, 200 of the small namespaces it polls them (the big
one is not selected), in the same run:

  netlink       -collector netlink, empty namespaces skipped by sockstat (default)
  netlink-all   -collector netlink, every namespace dumped (the skip turned off)
  iter          -collector iter, empty namespaces skipped by sockstat (default)
  iter-all      -collector iter, every namespace walked

and reports the poll time, the cost of each extra namespace (slope between the
smallest and largest count) and per socket.

With --child-ehash N the small namespaces are created after setting
net.ipv4.tcp_child_ehash_entries=N (6.1+), so each gets its own socket hash table
instead of sharing the host's; the sysctl is restored at the end.

    python benchmarks/bench_namespaces.py [--connections 50000] [--repeat 5] [--child-ehash 1024]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xtcp2.config import Config  # noqa: E402
from xtcp2.daemon import Daemon  # noqa: E402

BIG = "xtcp2nsbench-big"
PREFIX = "xtcp2nsbench-"
SYSCTL = "/proc/sys/net/ipv4/tcp_child_ehash_entries"

# one process holds `small` connections in each listed namespace (setns per namespace)
SMALL_POP = r"""
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
home = os.open("/proc/self/ns/net", os.O_RDONLY)
keep = []
n = int(sys.argv[1])
for name in sys.argv[2:]:
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    assert libc.setns(fd, 0x40000000) == 0
    os.close(fd)
    l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(n + 1); keep.append(l)
    for _ in range(n):
        c = socket.create_connection(l.getsockname()); a, _ = l.accept(); keep.extend((c, a))
    assert libc.setns(home, 0x40000000) == 0
print("READY", flush=True)
sys.stdin.readline()
"""


def poll_time(daemon: Daemon, repeat: int) -> tuple[float, int]:
    daemon.collector.poll()  # warm up
    times, sockets = [], 0
    for _ in range(repeat):
        t = time.perf_counter()
        stats = daemon.collector.poll()
        times.append(time.perf_counter() - t)
        sockets = stats.sockets
    return statistics.median(times), sockets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000, help="connections in the big namespace")
    ap.add_argument("--counts", default="1,10,100,200")
    ap.add_argument("--populated-every", type=int, default=10)
    ap.add_argument("--small", type=int, default=20, help="connections in each populated small namespace")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--child-ehash", type=int, default=0)
    args = ap.parse_args()
    counts = [int(x) for x in args.counts.split(",")]
    total = max(counts)
    names = [f"{PREFIX}{i:03d}" for i in range(total)]
    populated = [n for i, n in enumerate(names) if i % args.populated_every == 0]
    old_sysctl = open(SYSCTL).read().strip() if os.path.exists(SYSCTL) else None
    made: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        subprocess.run(["ip", "netns", "add", BIG], check=True)
        made.append(BIG)
        subprocess.run(["ip", "-n", BIG, "link", "set", "lo", "up"], check=True)
        big = subprocess.Popen(["ip", "netns", "exec", BIG, sys.executable,
                                os.path.join(os.path.dirname(__file__), "population.py"),
                                "--connections", str(args.connections),
                                "--procs", str(max(1, -(-args.connections // 8500))), "--v6-share", "0.34"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(big)
        if args.child_ehash:
            if old_sysctl is None:
                raise SystemExit("--child-ehash needs net.ipv4.tcp_child_ehash_entries (kernel 6.1+)")
            with open(SYSCTL, "w") as f:
                f.write(str(args.child_ehash))
        for n in names:
            subprocess.run(["ip", "netns", "add", n], check=True)
            made.append(n)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        if old_sysctl is not None and args.child_ehash:
            with open(SYSCTL, "w") as f:
                f.write(old_sysctl)
        small = subprocess.Popen([sys.executable, "-c", SMALL_POP, str(args.small), *populated],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        procs.append(small)
        for p in (big, small):
            line = p.stdout.readline()
            if not line.startswith("READY"):
                raise SystemExit(f"population failed: {line!r}")

        rows = []
        for k in counts:
            sel = names[:k]
            res = {}
            for label, collector, skip in (("netlink", "netlink", True), ("netlink-all", "netlink", False),
                                           ("iter", "iter", True), ("iter-all", "iter", False)):
                cfg = Config(netns=sel, dest="null", once=True, debug_level=0, collector=collector,
                             populate_nsid=False)
                d = Daemon(cfg)
                try:
                    d.reconcile()
                    d.collector.skip_empty = skip
                    res[label] = poll_time(d, args.repeat)
                finally:
                    d.close()
            npop = sum(1 for n in sel if n in populated)
            rows.append((k, npop, res))
            print(f"{k:4d} namespaces ({npop} populated): " +
                  "  ".join(f"{lab} {t * 1e3:8.1f} ms ({s} sockets)" for lab, (t, s) in res.items()), flush=True)

        print(f"\nbig namespace: {args.connections} connections; small: every {args.populated_every}th has "
              f"{args.small} connections; child ehash {args.child_ehash or 'off (shared host hash)'}")
        print("| namespaces | populated | " + " | ".join(f"{lab} ms" for lab in rows[0][2]) + " |")
        print("|---:|---:|" + "---:|" * len(rows[0][2]))
        for k, npop, res in rows:
            print(f"| {k} | {npop} | " + " | ".join(f"{t * 1e3:.1f}" for t, _ in res.values()) + " |")
        # t = base + a * empty + b * populated, least squares over the counts
        import numpy as np
        design = np.array([[1.0, k - npop, npop] for k, npop, _ in rows])
        if np.linalg.matrix_rank(design) < 3:  # e.g. --populated-every 2: shares do not vary
            print("\nper namespace (poll / namespaces at the largest count):")
            k1, _, r1 = rows[-1]
            for lab, (t, _) in r1.items():
                print(f"  {lab:12s} {t / k1 * 1e3:7.2f} ms/namespace")
            print(f"load average at the end: {os.getloadavg()[0]:.2f}")
            return 0
        print("\ncost model t = base + empty x a + populated x b (least squares over the counts):")
        for lab in rows[0][2]:
            t = np.array([res[lab][0] for _, _, res in rows])
            (base, a, b), *_ = np.linalg.lstsq(design, t, rcond=None)
            k1, _, r1 = rows[-1]
            per_sock = r1[lab][0] / r1[lab][1] * 1e6 if r1[lab][1] else float("nan")
            print(f"  {lab:12s} base {base * 1e3:7.1f} ms   empty namespace {a * 1e3:7.2f} ms   "
                  f"populated namespace {b * 1e3:7.2f} ms   {per_sock:8.1f} us/socket at {k1}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
        return 0
    finally:
        for p in procs:
            try:
                p.stdin.close()
            except OSError:
                pass
            p.terminate()
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(30)
        if old_sysctl is not None and args.child_ehash:
            with open(SYSCTL, "w") as f:
                f.write(old_sysctl)
        for n in made:
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
