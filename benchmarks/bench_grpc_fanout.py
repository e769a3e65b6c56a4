"""What live-stream clients that never read cost the collector: 0 (the reference), 1
and 64 such clients, in one run against one daemon.

A namespace holds --connections established loopback connections (2x sockets). The
real Daemon polls it every --frequency s (poll mode, null destination) with the gRPC
server in front of it. A separate client process opens K FlatRecords streams, each on
its own HTTP/2 connection, and never reads them. Their grpc libraries still take data
until each stream's flow-control window is full (with grpc's default BDP probing it
grows to ~4 MiB: ~10,000 records), one gRPC message and one write per record: the fill.
After it nothing more is written to them and every record for them is dropped at
their own bounded queue. For each K (in rounds, alternating the order) this process
measures the fill (its wall time, the CPU it cost beyond the 0-client reference, the
polls meanwhile) and then, over --window s, the steady state:

  poll_s       mean xtcp2 poll duration (the daemon's PollStats.seconds)
  cpu          this process's CPU (all threads: collector, gRPC) per wall second
  drops        records dropped for the stalled clients (their bounded queues)

    python benchmarks/bench_grpc_fanout.py [--connections 20000] [--clients 0,1,64]
"""
from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from prometheus_client import REGISTRY  # noqa: E402

from xtcp2.api.grpc_server import start_grpc_server  # noqa: E402
from xtcp2.config import Config  # noqa: E402
from xtcp2.daemon import Daemon  # noqa: E402

NS = "bpfload-fanout"
HERE = os.path.dirname(os.path.abspath(__file__))

STALLED_CLIENTS = r"""
import sys, grpc
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb, xtcp_flat_record_pb2_grpc as g
import threading
target, k, bdp, readers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
calls, chans = [], []
def read(call):
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
for _ in range(readers):
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
    chans.append(ch)
    c = g.XTCPFlatRecordServiceStub(ch).FlatRecords(pb.FlatRecordsRequest())
    calls.append(c)
    threading.Thread(target=read, args=(c,), daemon=True).start()
for _ in range(k):
    # its own connection (local subchannel pool); with BDP probing (grpc's default) the
    # client's transport keeps taking data into its buffers, the window growing, for a while
    ch = grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1), ("grpc.http2.bdp_probe", bdp)])
    chans.append(ch)
    calls.append(g.XTCPFlatRecordServiceStub(ch).FlatRecords(pb.FlatRecordsRequest()))  # never iterated
print("ready", flush=True)
sys.stdin.read()
for c in calls:
    c.cancel()
for ch in chans:
    ch.close()
"""


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def drops() -> float:
    return REGISTRY.get_sample_value("xtcp2_grpc_stream_dropped_records_total", {"method": "FlatRecords"}) or 0.0


def sent() -> float:
    return REGISTRY.get_sample_value("xtcp2_grpc_stream_sent_records_total", {"method": "FlatRecords"}) or 0.0


def _mean(xs: list[float]) -> float:
    return round(sum(xs) / max(1, len(xs)), 4)


def measure(server, target: str, k: int, window: float, polls: list, bdp: int, settle_max: float,
            readers: int) -> dict:
    """Connect k clients that never read; wait until nothing more is written to them (their
    flow-control windows are full: the fill); then measure the steady state for `window` s."""
    clients = None
    fill = {}
    if k or readers:
        env = dict(os.environ, PYTHONPATH=os.path.join(HERE, ".."))
        n0, c0, t0 = len(polls), cpu(), time.monotonic()
        clients = subprocess.Popen([sys.executable, "-c", STALLED_CLIENTS, target, str(k), str(bdp), str(readers)],
                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if clients.stdout.readline().strip() != "ready":
            raise SystemExit("stalled clients did not start")
        deadline = time.monotonic() + 20
        while len(server.subscribers()) < k + readers and time.monotonic() < deadline:
            time.sleep(0.05)
        if len(server.subscribers()) < k + readers:
            raise SystemExit(f"only {len(server.subscribers())} of {k + readers} clients subscribed")
        # settled: no record written to any of them for 3 s (a reader never settles: settle_max)
        def written() -> int:
            return sum(s.sent_records for s in server.subscribers())
        last, last_change = written(), time.monotonic()
        while time.monotonic() - last_change < 3.0 and time.monotonic() - t0 < settle_max:
            time.sleep(0.25)
            if written() != last:
                last, last_change = written(), time.monotonic()
        fill_records = written()
        el = time.monotonic() - t0
        fill = {"fill_s": round(el, 1), "fill_cpu_s": round(cpu() - c0, 2), "fill_poll_s": _mean(polls[n0:]),
                "fill_records": fill_records}
    try:
        n0, d0, s0, c0, t0 = len(polls), drops(), sent(), cpu(), time.monotonic()
        time.sleep(window)
        el, used = time.monotonic() - t0, cpu() - c0
        took = polls[n0:]
        return {"clients": k, "polls": len(took), "poll_s": _mean(took), "poll_s_max": round(max(took, default=0.0), 4),
                "cpu": round(used / el, 3), "drops_per_s": round((drops() - d0) / el),
                "sent_per_s": round((sent() - s0) / el), **fill, "loadavg": round(os.getloadavg()[0], 2)}
    finally:
        if clients is not None:
            clients.stdin.close()
            clients.wait(30)
            deadline = time.monotonic() + 10
            while server.subscribers() and time.monotonic() < deadline:
                time.sleep(0.05)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=20000, help="idle connections (2x sockets)")
    ap.add_argument("--procs", type=int, default=4, help="population processes")
    ap.add_argument("--frequency", type=float, default=1.0, help="poll every s")
    ap.add_argument("--window", type=float, default=10.0, help="seconds measured per client count")
    ap.add_argument("--clients", default="0,1,64")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bdp", type=int, default=1, help="clients' grpc.http2.bdp_probe (grpc's default: 1)")
    ap.add_argument("--readers", type=int, default=0, help="clients that read, next to the stalled ones")
    ap.add_argument("--settle-max", type=float, default=300.0, help="longest wait for the clients' fill (s)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_grpc_fanout: needs root (namespaces)", file=sys.stderr)
        return 2
    counts = [int(x) for x in a.clients.split(",")]
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    pop = daemon = server = thread = None
    try:
        pop = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, os.path.join(HERE, "population.py"),
                                "--connections", str(a.connections), "--procs", str(a.procs)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = pop.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"population failed: {line!r}")
        cfg = Config(netns=[NS], grpc_port=0, dest="null", poll_frequency=a.frequency,
                     poll_timeout=a.frequency, reconcile_before_poll=False).validate()
        daemon = Daemon(cfg)
        server = start_grpc_server(daemon, cfg)
        target = f"127.0.0.1:{server.port}"
        polls: list[float] = []
        daemon.add_poll_hook(lambda st: polls.append(st.seconds))
        thread = threading.Thread(target=daemon.run, name="bench-daemon", daemon=True)
        thread.start()
        while len(polls) < 2:
            time.sleep(0.05)
        rows: dict[int, list[dict]] = {k: [] for k in counts}
        for r in range(a.rounds):
            for k in (counts if r % 2 == 0 else counts[::-1]):
                row = measure(server, target, k, a.window, polls, a.bdp, a.settle_max, a.readers)
                rows[k].append(row)
                print(row, flush=True)

        def mean(k: int, f: str) -> float:
            return sum(x[f] for x in rows[k]) / len(rows[k])

        ref = counts[0]
        print(f"\nsummary: {2 * a.connections} sockets, poll every {a.frequency:g}s, {a.rounds} x {a.window:g}s "
              f"per client count (reference: {ref} clients)")
        print("steady state (after the fill):")
        print("| stalled clients | poll s | poll / ref | collector CPU (of a core) | CPU / ref | drops/s |")
        print("|---|---|---|---|---|---|")
        for k in counts:
            print(f"| {k} | {mean(k, 'poll_s'):.3f} | {mean(k, 'poll_s') / mean(ref, 'poll_s'):.2f} | "
                  f"{mean(k, 'cpu'):.1%} | {mean(k, 'cpu') / mean(ref, 'cpu'):.2f} | {mean(k, 'drops_per_s'):.0f} |")
        ref_cpu = mean(ref, "cpu")
        print("fill (connect until nothing more is written to the clients):")
        print("| stalled clients | fill s | poll s during fill | CPU-s beyond the reference | per client |")
        print("|---|---|---|---|---|")
        for k in counts:
            if k and "fill_s" in rows[k][0]:
                extra = mean(k, "fill_cpu_s") - ref_cpu * mean(k, "fill_s")
                print(f"| {k} | {mean(k, 'fill_s'):.1f} | {mean(k, 'fill_poll_s'):.3f} | {extra:.1f} | {extra / k:.2f} |")
        return 0
    finally:
        if server is not None:
            server.stop()
        if daemon is not None:
            daemon.stop()
            if thread is not None:
                thread.join(10)
            daemon.close()
        if pop is not None:
            pop.stdin.close()
            try:
                pop.wait(30)
            except subprocess.TimeoutExpired:
                pop.kill()
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
