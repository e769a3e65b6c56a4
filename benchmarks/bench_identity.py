"""What socket identity (pid/comm, container) costs a poll, against enrichment off, same run.

Builds N loopback connections (2N sockets) in a fresh namespace (benchmarks/population.py).
Its processes run in a cgroup v2 directory named like a container
(<cgroup2>/xtcp2bench/<64 hex>), so every socket also resolves to a container id through
the kernel's cgroup id. Three in-process daemons watch the namespace, differing only in
enrichment, and poll it interleaved, `--repeat` times each:
  off        -resolveProcess=false (no identity work at all)
  process    -resolveProcess (the default): pid + comm on every record
  container  -resolveProcess -resolveContainerId -enrichContainer (docker socket absent:
             container id + runtime on every record, names would come from the API)
Reports medians, the ratio to `off`, and the first poll of a fresh daemon (every socket
new: the /proc walk) against its own steady state.

    python benchmarks/bench_identity.py --connections 50000 [--repeat 5]
    python benchmarks/bench_identity.py --containers 100   # daemon RSS with 100 docker containers
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xtcp2.config import Config  # noqa: E402
from xtcp2.daemon import Daemon  # noqa: E402
from xtcp2.identity.cgroup import cgroup2_mount  # noqa: E402

NS = "xtcp2bench-identity"
FAKE_ID = "b" * 64
MODES = {
    "off": dict(resolve_process=False),
    "process": dict(resolve_process=True),
    "container": dict(resolve_process=True, resolve_container_id=True, enrich_container_enable=True,
                      docker_socket_path="/nonexistent/docker.sock"),
}


def daemon_for(mode: str) -> Daemon:
    cfg = Config(netns=[NS], dest="null", marshal_to="protobufList", once=True, debug_level=0, **MODES[mode])
    d = Daemon(cfg)
    d.reconcile()
    return d


def timed_poll(d: Daemon) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, records) of one poll."""
    t, c = time.perf_counter(), time.process_time()
    stats = d.collector.poll()
    return time.perf_counter() - t, time.process_time() - c, stats.records


def time_joins(d: Daemon) -> list[float]:
    """Wrap the daemon's identity join to add up its CPU time (thread_time: it runs on
    the netlinker threads) (bench only)."""
    spent = [0.0]
    inner = d.identity.join

    def join(*a, **kw):
        t = time.thread_time()
        try:
            return inner(*a, **kw)
        finally:
            spent[0] += time.thread_time() - t
    d.identity.join = join
    return spent


ENCODE = [0.0]


def time_encoding() -> None:
    """Add up the CPU time of the record sink's encode_rows calls (all daemons: they poll
    one at a time) (bench only): what the identity fields cost the encoder."""
    from xtcp2.records import sink
    inner = sink.encode_rows

    def encode_rows(*a, **kw):
        t = time.thread_time()
        try:
            return inner(*a, **kw)
        finally:
            ENCODE[0] += time.thread_time() - t
    sink.encode_rows = encode_rows


def poll_bench(args) -> int:
    root = cgroup2_mount()
    if not root:
        raise SystemExit("no cgroup2 hierarchy mounted")
    cg = os.path.join(root, "xtcp2bench", FAKE_ID)
    os.makedirs(cg, exist_ok=True)
    procs = args.procs or max(1, -(-args.connections // 8500))
    subprocess.run(["ip", "netns", "add", NS], check=True)
    pop = None
    daemons = {}
    try:
        subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
        # the shell moves itself into the cgroup, then becomes the population: its
        # workers and their sockets belong to the "container"
        script = f'echo $$ > {cg}/cgroup.procs && exec ip netns exec {NS} "$0" "$@"'
        pop = subprocess.Popen(["sh", "-c", script, sys.executable,
                                os.path.join(os.path.dirname(__file__), "population.py"),
                                "--connections", str(args.connections), "--procs", str(procs)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = pop.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"population failed: {line!r}")
        time_encoding()
        # first poll of a fresh daemon: every socket is new
        first, first_join, joins = {}, {}, {}
        for mode in MODES:
            d = daemons[mode] = daemon_for(mode)
            joins[mode] = time_joins(d)
            first[mode] = timed_poll(d)[0]
            first_join[mode] = joins[mode][0]
        for _ in range(2):   # warm up
            for d in daemons.values():
                d.collector.poll()
        wall = {m: [] for m in MODES}
        cpu = {m: [] for m in MODES}
        join = {m: [] for m in MODES}
        enc = {m: [] for m in MODES}
        records = {}
        order = list(daemons.items())
        for i in range(args.repeat):
            for mode, d in order[i % 3:] + order[:i % 3]:   # rotated: no mode always goes first
                joins[mode][0] = ENCODE[0] = 0.0
                w, c, records[mode] = timed_poll(d)
                wall[mode].append(w)
                cpu[mode].append(c)
                join[mode].append(joins[mode][0])
                enc[mode].append(ENCODE[0])
        ident = daemons["container"].identity
        mw = {m: statistics.median(v) for m, v in wall.items()}
        mc = {m: statistics.median(v) for m, v in cpu.items()}
        mj = {m: statistics.median(v) for m, v in join.items()}
        me = {m: statistics.median(v) for m, v in enc.items()}
        print(f"population: {args.connections} connections in {NS}, {records['off']} records per poll; "
              f"load {os.getloadavg()[0]:.1f}; medians of {args.repeat} interleaved polls")
        print("CPU seconds per poll; join and encode: CPU of the identity join and of encode_rows inside it")
        print(f"{'mode':<10} {'wall s':>7} {'vs off':>7} {'CPU s':>7} {'vs off':>7} {'join s':>7} {'encode s':>8} "
              f"{'first poll s':>12} {'first join s':>12}")
        for m in MODES:
            print(f"{m:<10} {mw[m]:7.3f} {mw[m] / mw['off']:6.2f}x {mc[m]:7.3f} {mc[m] / mc['off']:6.2f}x "
                  f"{mj[m]:7.3f} {me[m]:8.3f} {first[m]:12.3f} {first_join[m]:12.3f}")
        print(f"identity caches: {len(ident._keys)} sockets, {len(ident._procs)} processes, "
              f"{len(ident._conts)} containers; /proc walks {ident.owners.walks}, "
              f"fd links read {ident.owners.links_read}")
        for name, data in (("wall", wall), ("cpu", cpu)):
            print(f"samples {name} " + " ".join(f"{m}={['%.3f' % v for v in data[m]]}" for m in MODES))
        return 0
    finally:
        for d in daemons.values():
            d.close()
        if pop:
            pop.stdin.close()
            pop.terminate()
            try:
                pop.wait(120)   # closing 100k sockets takes a while on a loaded host
            except subprocess.TimeoutExpired:
                pop.kill()
                pop.wait(30)
        subprocess.run(["ip", "netns", "del", NS])
        # workers outlive a killed parent: the cgroup lists exactly the population's processes
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                for pid in f.read().split():
                    os.kill(int(pid), signal.SIGKILL)
            time.sleep(1)
        except OSError:
            pass
        for d in (cg, os.path.dirname(cg)):
            try:
                os.rmdir(d)
            except OSError as e:
                print(f"cleanup {d}: {e}", file=sys.stderr)


def rss_bench(args) -> int:
    """Peak RSS of `xtcp2` polling a host with N docker containers, enrichment on vs off."""
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
    from tests.identity.conftest import IMAGE, _build_image
    from tests.servers.dockerd import Dockerd
    d = Dockerd("xtcp2-bench-")
    try:
        d.start()
        _build_image(d)
        t0 = time.perf_counter()
        for i in range(args.containers):
            d.docker("run", "-d", "--name", f"xtcp2-bench-{i}", "--network", "none", IMAGE, "sh", "-c",
                     "nc -ll -p 8080 -e cat & sleep 1; sleep 100000 | nc 127.0.0.1 8080")
        print(f"{args.containers} containers started in {time.perf_counter() - t0:.0f}s; load "
              f"{os.getloadavg()[0]:.1f}")
        time.sleep(3)
        # only the containers' namespaces (named by container id) and the host's: other
        # namespaces on a shared machine would weigh in the RSS
        only = ["--netns", "default"]
        for cid in d.docker("ps", "-q", "--no-trunc").split():
            only += ["--netns", cid]
        runs = (("on", ["-resolveContainerId", "-enrichContainer", "-dockerSocket", d.sock]),
                ("off", ["-resolveProcess=false"]),
                ("on", ["-resolveContainerId", "-enrichContainer", "-dockerSocket", d.sock]))
        for label, flags in runs:
            cmd = [sys.executable, "-m", "xtcp2", "--mode", "poll", "-dest", "null", "-frequency", "2s",
                   "-maxLoops", "4", "-d", "0", "-promListen", "127.0.0.1:0", "-grpcPort", "0", *only, *flags]
            t = time.perf_counter()
            p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            _, status, ru = os.wait4(p.pid, 0)
            err = p.stderr.read()
            print(f"enrichment {label:<3}: peak RSS {ru.ru_maxrss / 1024:6.0f} MiB, exit "
                  f"{os.waitstatus_to_exitcode(status)}, {time.perf_counter() - t:.1f}s wall"
                  + ("" if os.waitstatus_to_exitcode(status) == 0 else f"\n{err[-2000:]}"))
        return 0
    finally:
        d.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--procs", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--containers", type=int, default=0, help="measure daemon RSS with this many containers")
    args = ap.parse_args()
    return rss_bench(args) if args.containers else poll_bench(args)


if __name__ == "__main__":
    sys.exit(main())
