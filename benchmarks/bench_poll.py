"""Poll-mode throughput against its references, in one run on one population.

Builds N loopback connections (2N sockets) in a fresh namespace, then measures,
interleaved, `--repeat` times each:
  raw    recv of the whole inet_diag dump (v4 + v6, same extensions), no parsing:
         the floor any collector pays
  ss     `ss -tinm -a` inside the namespace, output to /dev/null
  xtcp2  one in-process poll of that namespace: dump, decode, encode protobuf,
         marshal protobufList, destination null (-collector netlink)
  iter   the same poll with -collector iter (BPF TCP iterator instead of inet_diag)
  itcol  the iterator's collection step alone: read every record and build the
         columns, no encoding (the part that replaces dump + decode)
  once   `xtcp2 --once -dest null -marshal protobufList --netns NS` as a process
         (adds interpreter start-up); its peak RSS is reported too
Prints medians, sockets/s and ratios (xtcp2/raw, iter/raw, itcol/raw, ss/xtcp2).
Also CPU seconds per run (all threads), the overlap of the iterator poll's two
threads (CPU / wall) and the minima. Steady state: before measuring, both daemons poll until their identity join knows
the owner of every socket (the first polls after start read /proc for them).

    python benchmarks/bench_poll.py --connections 50000 [--repeat 5] [--v6-share 0.34]
"""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xtcp2.config import Config  # noqa: E402
from xtcp2.daemon import Daemon  # noqa: E402
from xtcp2.netlink import constants as c  # noqa: E402
from xtcp2.netlink.diag import DiagSocket, build_request  # noqa: E402
from xtcp2.netns.enter import NetnsEnterer  # noqa: E402

NS = f"xtcp2bench-{os.getpid()}"  # unique: two runs never share (or delete) one namespace


def raw_dump(sock, ext: int) -> int:
    buf = bytearray(65536)
    mv = memoryview(buf)
    words = mv.cast("I")
    total = 0
    for fam in (c.AF_INET, c.AF_INET6):
        sock.send(build_request(fam, ext))
        while True:
            n = sock.recv_into(mv)
            total += n
            t = n - 20
            if n >= 20 and words[t >> 2] == 20 and words[(t >> 2) + 1] & 0xFFFF == c.NLMSG_DONE:
                break
    return total


def settle(daemon, sockets: int, limit: float = 60.0) -> float:
    """Poll until the identity join knows the owner of (nearly) every socket: its /proc
    reads are budgeted (10% of a core, 1 s burst), so the first polls after start
    resolve owners and are not steady-state polls. Returns the seconds it took."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit:
        daemon.collector.poll()
        if not daemon.identity.resolve_process or len(daemon.identity._keys) >= 0.99 * sockets:
            break
        time.sleep(1.0)   # let the read budget refill
    return time.monotonic() - t0


CPU: dict[str, list[float]] = {}


def timed(fn, *a, cpu: str = "", **kw):
    """(wall seconds, result); with cpu=name, the process's CPU seconds (all threads,
    kernel time included) go to CPU[name]."""
    c0, t = time.process_time(), time.perf_counter()
    r = fn(*a, **kw)
    wall = time.perf_counter() - t
    if cpu:
        CPU.setdefault(cpu, []).append(time.process_time() - c0)
    return wall, r


def interleaved(fns: dict, repeat: int, warmup: int = 1) -> dict[str, list[float]]:
    """Wall seconds of each fn, `repeat` times, taking turns (so a change of load falls on
    all of them alike), after `warmup` untimed rounds."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeat):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t)
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--procs", type=int, default=0, help="population processes (default: 8500 connections each)")
    ap.add_argument("--v6-share", type=float, default=0.34)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    subprocess.run(["ip", "netns", "add", NS], check=True)
    pop = None
    try:
        pop = start_population(NS, args.connections, args.v6_share, args.procs)
        cfg = Config(netns=[NS], dest="null", marshal_to="protobufList", once=True, debug_level=0,
                     collector="netlink")
        daemon = Daemon(cfg)
        daemon.reconcile()
        it_daemon = Daemon(cfg.replace(collector="iter"))
        it_daemon.reconcile()
        ns = daemon.table.namespaces()[0]
        it_ns = it_daemon.table.namespaces()[0]
        ext = c.ext_mask(cfg.enabled_deserializers)
        wanted = c.wanted_attrs(cfg.enabled_deserializers)
        itc = it_daemon.collector.iter

        def iter_collect() -> int:
            return sum(cols.n for cols in itc.columns(lambda fn: it_daemon.collector._in_ns(it_ns, fn), wanted))

        raw_t, ss_t, x_t, it_t, itc_t = [], [], [], [], []
        nbytes = sockets = it_sockets = 0
        expected = daemon.collector.poll().sockets
        settled = settle(daemon, expected), settle(it_daemon, expected)
        for _ in range(2):  # warm up allocator and caches
            raw_dump(ns.diag.sock, ext)
            daemon.collector.poll()
            it_daemon.collector.poll()
            iter_collect()
        for _ in range(args.repeat):
            t, nbytes = timed(raw_dump, ns.diag.sock, ext, cpu="raw")
            raw_t.append(t)
            t, _ = timed(subprocess.run, ["ip", "netns", "exec", NS, "ss", "-tinm", "-a"],
                         stdout=subprocess.DEVNULL, check=True)
            ss_t.append(t)
            t, stats = timed(daemon.collector.poll, cpu="netlink")
            x_t.append(t)
            sockets = stats.sockets
            t, stats = timed(it_daemon.collector.poll, cpu="iter")
            it_t.append(t)
            it_sockets = stats.sockets
            t, _ = timed(iter_collect, cpu="itcol")
            itc_t.append(t)
        daemon.close()
        it_daemon.close()
        t0 = time.perf_counter()
        once = subprocess.Popen([sys.executable, "-m", "xtcp2", "--once", "-dest", "null", "-collector", "netlink",
                                 "-marshal", "protobufList", "--netns", NS, "-d", "0"],
                                stderr=subprocess.PIPE, text=True)
        _, status, rusage = os.wait4(once.pid, 0)
        once_t = time.perf_counter() - t0
        summary = once.stderr.read().strip()
        raw_m, ss_m, x_m, it_m, itc_m = (statistics.median(v) for v in (raw_t, ss_t, x_t, it_t, itc_t))
        print(f"population: {args.connections} connections, {sockets} sockets in {NS}; dump {nbytes / 1e6:.1f} MB; "
              f"identity settled in {settled[0]:.1f} s / {settled[1]:.1f} s")
        print(f"raw recv      {raw_m:8.3f} s   {sockets / raw_m:12,.0f} sockets/s")
        print(f"ss -tinm -a   {ss_m:8.3f} s   {sockets / ss_m:12,.0f} sockets/s")
        print(f"xtcp2 poll    {x_m:8.3f} s   {sockets / x_m:12,.0f} sockets/s   (-collector netlink)")
        print(f"xtcp2 poll    {it_m:8.3f} s   {it_sockets / it_m:12,.0f} sockets/s   (-collector iter, {it_sockets} sockets)")
        print(f"iter collect  {itc_m:8.3f} s   {it_sockets / itc_m:12,.0f} sockets/s   (records -> columns, no encoding)")
        print(f"xtcp2 --once  {once_t:8.3f} s   (process incl. start-up; {summary}); peak RSS {rusage.ru_maxrss / 1024:.0f} MiB")
        print(f"ratios: xtcp2/raw = {x_m / raw_m:.2f}x   iter poll/raw = {it_m / raw_m:.2f}x   "
              f"iter collect/raw = {itc_m / raw_m:.2f}x   ss/xtcp2 = {ss_m / x_m:.2f}x   ss/raw = {ss_m / raw_m:.2f}x")
        print(f"samples raw={['%.3f' % v for v in raw_t]} ss={['%.3f' % v for v in ss_t]} xtcp2={['%.3f' % v for v in x_t]} "
              f"iter={['%.3f' % v for v in it_t]} itcol={['%.3f' % v for v in itc_t]}")
        cpu = {k: statistics.median(v) for k, v in CPU.items()}
        print(f"CPU per run (all threads, kernel included): raw {cpu['raw']:.3f} s, netlink poll {cpu['netlink']:.3f} s, "
              f"iter poll {cpu['iter']:.3f} s ({cpu['iter'] / cpu['raw']:.2f}x raw), "
              f"iter collect {cpu['itcol']:.3f} s ({cpu['itcol'] / cpu['raw']:.2f}x raw)")
        # the kernel walk (reader thread) and decode/encode (worker) overlap on two cores
        print(f"overlap: iter poll CPU / wall = {cpu['iter'] / it_m:.2f}, netlink poll {cpu['netlink'] / x_m:.2f} "
              f"(1 = serial, 2 = both cores busy throughout)")
        print(f"minima: raw {min(raw_t):.3f} s, iter poll {min(it_t):.3f} s ({min(it_t) / min(raw_t):.2f}x), "
              f"iter collect {min(itc_t):.3f} s ({min(itc_t) / min(raw_t):.2f}x)")
        print(f"load average at the start {load0:.2f}, at the end {os.getloadavg()[0]:.2f}")
        return 0 if os.waitstatus_to_exitcode(status) == 0 else 1
    finally:
        stop_population(pop, NS)


def start_population(ns: str, connections: int, v6_share: float, procs: int = 0) -> subprocess.Popen:
    """population.py in namespace ns (already added), its loopback up; returns once its
    connections are established. End it with stop_population()."""
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    pop = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable,
                            os.path.join(os.path.dirname(os.path.abspath(__file__)), "population.py"),
                            "--connections", str(connections), "--procs", str(procs or max(1, -(-connections // 8500))),
                            "--v6-share", str(v6_share)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = pop.stdout.readline()
    if not line.startswith("READY"):
        pop.kill()
        pop.wait()
        raise SystemExit(f"population failed: {line!r}")
    return pop


@contextlib.contextmanager
def populated_netns(ns: str, connections: int, v6_share: float):
    """A new namespace ns holding a population; yields (run_in, diag): run_in(fn) runs fn
    inside it, diag is an inet_diag socket opened there. All of it goes at the end."""
    subprocess.run(["ip", "netns", "add", ns], check=True)
    pop = enter = diag = None
    try:
        pop = start_population(ns, connections, v6_share)
        enter = NetnsEnterer()
        path = f"/run/netns/{ns}"
        diag = enter.run_in(path, DiagSocket.open)
        yield (lambda fn: enter.run_in(path, fn)), diag
    finally:
        if diag is not None:
            diag.close()
        if enter is not None:
            enter.close()
        stop_population(pop, ns)


def stop_population(pop: subprocess.Popen | None, ns: str) -> None:
    """End a population.py run and delete its namespace, workers included."""
    if pop:
        pop.stdin.close()
        pop.terminate()
        try:
            pop.wait(120)   # closing 100,000 sockets takes a while on a busy host
        except subprocess.TimeoutExpired:
            pop.kill()
            pop.wait()
    # workers a killed population left behind: only this run's processes live in ns
    left = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
    for pid in left:
        os.kill(int(pid), signal.SIGKILL)
    subprocess.run(["ip", "netns", "del", ns])


if __name__ == "__main__":
    sys.exit(main())
