"""Peak RSS of the daemon, poll and bpf mode, on a 100k-socket namespace and under churn.

Every figure is one whole `xtcp2` process (the default daemon: gRPC and /metrics
listening, identity enrichment on), its peak RSS from wait4 (ru_maxrss, the kernel's
high-water mark, as VmHWM), next to references from the same run:

  python -c 'import numpy'     the interpreter with numpy, nothing else
  idle                         the daemon watching one empty namespace

Populations: `benchmarks/population.py` builds N established loopback connections
(2N + procs sockets, a third IPv6) in one namespace; `benchmarks/churn.c` makes short
connections (connect, 100 bytes, close) at a fixed rate in another, which also holds
`--churn-idle` idle connections. Poll mode runs `-maxLoops` polls; bpf mode runs
`--seconds` (its start-up resync, then events and a refresh every `-frequency`) and is
stopped with SIGTERM.

    python benchmarks/bench_memory.py [--connections 50000] [--churn-rate 2000] [--seconds 25]

Namespaces are named xtcp2mem-*; they and every process started are removed at the end.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
POP, CHURN, EMPTY = "xtcp2mem-pop", "xtcp2mem-churn", "xtcp2mem-empty"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def netns(cmd: str, name: str) -> None:
    subprocess.run(["ip", "netns", cmd, name], check=cmd == "add", capture_output=True)
    if cmd == "add":
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


def peak(cmd: list[str], seconds: float | None = None) -> tuple[float, float]:
    """(peak RSS MiB, wall s) of one process; stopped by SIGTERM after `seconds`."""
    env = dict(os.environ, PYTHONPATH=ROOT)
    t0 = time.monotonic()
    with tempfile.TemporaryFile() as err:
        p = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        if seconds is not None:
            try:
                p.wait(seconds)
            except subprocess.TimeoutExpired:
                p.send_signal(signal.SIGTERM)
        _, status, ru = os.wait4(p.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise SystemExit(f"bench_memory: {' '.join(cmd)}: exit {os.waitstatus_to_exitcode(status)}: "
                             f"{err.read().decode()[-800:]}")
    return ru.ru_maxrss / 1024, time.monotonic() - t0


def daemon(ns: str, mode: str, frequency: str, extra: list[str]) -> list[str]:
    return [sys.executable, "-m", "xtcp2", "--mode", mode, "--netns", ns, "-frequency", frequency,
            "-promListen", f"127.0.0.1:{free_port()}", "-grpcPort", str(free_port()), *extra]


def start_population(ns: str, connections: int, procs: int) -> subprocess.Popen:
    p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, os.path.join(HERE, "population.py"),
                          "--connections", str(connections), "--procs", str(procs), "--v6-share", "0.34"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = p.stdout.readline()
    if not line.startswith("READY"):
        raise SystemExit(f"bench_memory: population in {ns} failed: {line!r}")
    return p


def stop(p: subprocess.Popen | None) -> None:
    if p is None or p.poll() is not None:
        return
    if p.stdin:
        p.stdin.close()  # population.py: holds until stdin closes
    p.terminate()
    try:
        p.wait(10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--procs", type=int, default=6)
    ap.add_argument("--churn-rate", type=float, default=2000)
    ap.add_argument("--churn-idle", type=int, default=2000, help="idle connections beside the churn")
    ap.add_argument("--seconds", type=float, default=25.0, help="how long each bpf-mode run lasts")
    ap.add_argument("--loops", type=int, default=3, help="polls of each poll-mode run")
    a = ap.parse_args()

    exe = os.path.join(tempfile.gettempdir(), f"xtcp2-bench-mem-churn-{os.getpid()}")
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "churn.c")], check=True)
    for n in (POP, CHURN, EMPTY):
        netns("del", n)
        netns("add", n)
    pop = idle = churn = None
    rows: list[tuple[str, float, float]] = []
    done = ""
    try:
        rows.append(("python -c 'import numpy'", *peak([sys.executable, "-c", "import numpy"])))
        rows.append(("idle daemon, poll (1 empty namespace)",
                     *peak(daemon(EMPTY, "poll", "2s", ["-maxLoops", str(a.loops)]))))
        pop = start_population(POP, a.connections, a.procs)
        n = 2 * a.connections + a.procs
        rows.append((f"poll, {n:,} sockets ({a.loops} polls)",
                     *peak(daemon(POP, "poll", "5s", ["-maxLoops", str(a.loops)]))))
        rows.append((f"bpf, {n:,} sockets ({a.seconds:g} s)", *peak(daemon(POP, "bpf", "5s", []), a.seconds)))
        stop(pop)
        pop = None
        idle = start_population(CHURN, a.churn_idle, 1)
        poll_loops = 8
        secs = 2 + 2 * poll_loops + 10 + a.seconds + 5   # outlasts both runs below
        churn = subprocess.Popen(["nice", "-n", "10", "ip", "netns", "exec", CHURN, exe, str(a.churn_rate),
                                  str(secs), "2"], stdout=subprocess.PIPE, text=True, start_new_session=True)
        time.sleep(2)
        label = f"{a.churn_rate:g} connections/s + {2 * a.churn_idle + 1:,} idle sockets"
        rows.append((f"poll, churn {label}", *peak(daemon(CHURN, "poll", "2s", ["-maxLoops", str(poll_loops)]))))
        rows.append((f"bpf, churn {label}", *peak(daemon(CHURN, "bpf", "2s", []), a.seconds)))
        done = churn.communicate(timeout=secs + 60)[0].strip()
        churn = None
    finally:
        for p in (pop, idle):
            stop(p)
        if churn is not None:  # its client and server processes are in its session
            os.killpg(churn.pid, signal.SIGKILL)
            churn.wait()
        for n in (POP, CHURN, EMPTY):
            netns("del", n)
        if os.path.exists(exe):
            os.unlink(exe)
    base = rows[0][1]
    print(f"load average {os.getloadavg()[0]:.2f}; churn completed {done or '?'} connections")
    print(f"{'run':<58} {'peak RSS MiB':>13} {'vs numpy':>9} {'wall s':>7}")
    for name, rss, wall in rows:
        print(f"{name:<58} {rss:13.1f} {rss / base:9.2f} {wall:7.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
