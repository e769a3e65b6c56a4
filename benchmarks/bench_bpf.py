"""--mode bpf against poll mode on one host, one population, in one run.

Builds N idle established loopback connections (2N sockets) in one namespace and runs
short-connection churn in a second namespace. Measures, in this process:

  poll        NetlinkCollector every --frequency s (the reference)
  bpf         BpfMode: events + refresh of live namespaces every --frequency s
  bpf-events  BpfMode with the periodic refresh off (events + resyncs only)

CPU seconds per minute of each (getrusage of this process; the population and the
churn run in other processes), then, with bpf-events running, churn at increasing
rates: ring buffer drops, destroy-group overruns, event-to-record latency p50/p99
(open records: event -> targeted lookup; close records: BPF close event -> record),
achieved connection rate, RSS.

    python benchmarks/bench_bpf.py --connections 50000 [--window 30] [--rates 1000,2000,4000,0] [--identity]

The churn generator is benchmarks/churn.c (built with gcc at run time; --churn-impl
python uses an in-line Python one). It runs at nice 10 so that on a small host it
does not starve the collector it measures.

A rate of 0 means "as fast as the churn processes go".

Load mode (`--hogs N --rate R`): the bpf collector as the daemon runs it (events +
refresh of live namespaces), churn at R connections/s for --churn-seconds, alternately
without and with N CPU hogs (`sh -c 'while :; do :; done'` at nice 0, so the collector
gets no priority over them). Reports ring buffer drops, destroy overruns, latency and
the collector's CPU in each, and the CPU ratio hogs / no hogs from the same run:

    python benchmarks/bench_bpf.py --connections 10000 --hogs 2 --rate 5000 [--repeat 2]
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

import numpy as np  # noqa: E402

from xtcp2.collect import NetlinkCollector  # noqa: E402
from xtcp2.modes import Parts  # noqa: E402
from xtcp2.modes.bpf import BpfMode  # noqa: E402
from xtcp2.records.sink import RecordSink  # noqa: E402
from xtcp2.config import Config  # noqa: E402
from prometheus_client import REGISTRY  # noqa: E402

from xtcp2.netns.registry import NamespaceTable  # noqa: E402
from xtcp2.pipeline import Emitter  # noqa: E402

POP, CHURN = "xtcp2bpfbench-pop", "xtcp2bpfbench-churn"
HERE = os.path.dirname(os.path.abspath(__file__))

CHURN_SCRIPT = r"""
import os, socket, sys, time
rate, secs, procs = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", 0)); l.listen(4096); port = l.getsockname()[1]
servers = []
for _ in range(procs):
    pid = os.fork()
    if pid == 0:
        while True:
            c, _ = l.accept()
            while c.recv(65536):
                pass
            c.sendall(b"r" * 200); c.close()
    servers.append(pid)
clients = []
for i in range(procs):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        n, t0 = 0, time.monotonic()
        gap = procs / rate if rate > 0 else 0.0
        while time.monotonic() - t0 < secs:
            if gap:
                ahead = t0 + n * gap - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            s = socket.create_connection(("127.0.0.1", port)); s.sendall(b"s" * 100)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
            s.close(); n += 1
        os.write(w, str(n).encode()); os._exit(0)
    os.close(w); clients.append((pid, r))
total = 0
for pid, r in clients:
    total += int(os.read(r, 64) or b"0"); os.waitpid(pid, 0)
for pid in servers:
    os.kill(pid, 9); os.waitpid(pid, 0)
print(total)
"""


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def netns(cmd: str, name: str) -> None:
    subprocess.run(["ip", "netns", cmd, name], check=cmd == "add", capture_output=True)
    if cmd == "add":
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)


IDENTITY = False   # --identity: pid/comm on every record, as the daemon does by default


def pipeline(frequency: float, **extra):
    cfg = Config(mode="bpf", dest="null", poll_frequency=frequency, poll_timeout=min(5.0, frequency),
                 netns=[POP, CHURN], resolve_process=IDENTITY, **extra).validate()
    table = NamespaceTable(cfg.netns, cfg.packet_size, cfg.nl_timeout_milliseconds, cfg.populate_nsid)
    emitter = Emitter(cfg)
    sink = RecordSink(cfg, emitter)
    poller = NetlinkCollector(cfg, table, sink)
    poller.identity = None
    if IDENTITY:
        from xtcp2.identity.join import IdentityJoin
        from xtcp2.daemon import BPF_WALK_SLICE
        poller.identity = IdentityJoin.from_config(cfg)
        poller.identity.owners.max_slice = BPF_WALK_SLICE   # as the Daemon sets it in bpf mode
        sink.add_join(poller.identity.sink_join)
    return cfg, table, emitter, poller


def run_poll(frequency: float, window: float) -> dict:
    cfg, table, emitter, poller = pipeline(frequency)
    try:
        table.reconcile()
        poller.poll()  # the first poll is start-up, like bpf mode's start-up resync
        t0, c0 = time.monotonic(), cpu()
        polls = records = 0
        while True:
            time.sleep(max(0.0, t0 + (polls + 1) * frequency - time.monotonic()))
            if time.monotonic() - t0 >= window:
                break
            st = poller.poll()
            polls += 1
            records += st.records
        el, used = time.monotonic() - t0, cpu() - c0
        return {"cpu_s_per_min": used / el * 60, "polls": polls, "records": records, "rss_mb": rss_mb()}
    finally:
        poller.close(), emitter.close(), table.close()


class BpfRun:
    def __init__(self, frequency: float, refresh: bool) -> None:
        extra = {} if refresh else {"bpf_refresh_frequency": 0.0}
        self.cfg, self.table, self.emitter, self.poller = pipeline(frequency, **extra)
        learn = self.poller.identity.learn if self.poller.identity is not None else None
        self.col = BpfMode(self.cfg, Parts(self.table, self.poller, self.poller.sink, learn_owners=learn))
        self.col.start()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.col.run, args=(self.stop,), daemon=True)
        t0 = time.monotonic()
        self.thread.start()
        if not self.col.ready.wait(600):
            raise SystemExit("bpf collector did not become ready")
        self.startup_s = time.monotonic() - t0

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)
        self.col.close()
        self.poller.close(), self.emitter.close(), self.table.close()

    def latencies_since(self, count0: int) -> tuple[np.ndarray, np.ndarray]:
        """(latencies, sources) of the records since count0 (at most the ring's 65536)."""
        col = self.col
        k = min(col.stage.latency_count - count0, len(col.stage.latencies))
        if k <= 0:
            return np.empty(0), np.empty(0, np.uint8)
        idx = (col.stage.latency_count - k + np.arange(k)) % len(col.stage.latencies)
        return col.stage.latencies[idx], col.stage.latency_source[idx]


def counter(name: str, **labels: str) -> float:
    """A sample of the registry the collector's metrics live on (0 for a series not yet touched)."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def idle_window(run: BpfRun, window: float) -> dict:
    e0 = counter("xtcp2_bpf_events_total", kind="state")
    c0, t0 = cpu(), time.monotonic()
    time.sleep(window)
    el, used = time.monotonic() - t0, cpu() - c0
    # TCP state changes elsewhere on the host (other processes, other namespaces) still
    # reach the collector: "idle" is only as idle as the host
    host_events = (counter("xtcp2_bpf_events_total", kind="state") - e0) / el
    return {"cpu_s_per_min": used / el * 60, "host_events_per_s": round(host_events, 1),
            "startup_s": run.startup_s, "rss_mb": rss_mb(), "records": dict(run.col.stats)}


def churn_command(impl: str) -> list[str]:
    """The C generator if gcc can build it (Python tops out at a few thousand/s here)."""
    if impl == "c":
        exe = os.path.join("/tmp", f"xtcp2-bench-churn-{os.getpid()}")
        r = subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "churn.c")], capture_output=True, text=True)
        if r.returncode == 0:
            return [exe]
        print(f"bench_bpf: gcc failed ({r.stderr.strip()[:200]}); using the Python churn", file=sys.stderr)
    return [sys.executable, "-c", CHURN_SCRIPT]


def _pct(lat: np.ndarray, q: float):
    return round(float(np.percentile(lat, q)) * 1e3, 2) if len(lat) else None


class FillSampler:
    """Peak ring buffer occupancy (bytes written, not yet consumed), sampled every 5 ms:
    how close the consumer came to losing events."""

    def __init__(self, reader) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, args=(reader,), daemon=True)
        self._t.start()

    def _run(self, reader) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, reader.pending_bytes())

    def stop(self) -> None:
        self._stop.set()
        self._t.join()


def start_hogs(n: int) -> list[subprocess.Popen]:
    """n busy loops at nice 0 (the collector's own priority): the scheduler shares
    every core between them and the collector."""
    return [subprocess.Popen(["sh", "-c", "while :; do :; done"]) for _ in range(n)]


def stop_hogs(hogs: list[subprocess.Popen]) -> None:
    for h in hogs:
        h.kill()
    for h in hogs:
        h.wait()


def churn(run: BpfRun, cmd: list[str], rate: float, secs: float, procs: int, nice: int = 10) -> dict:
    d0, o0 = counter("xtcp2_bpf_ringbuf_drops_total"), counter("xtcp2_destroy_overruns_total")
    r0 = counter("xtcp2_bpf_resyncs_total", reason="ringbuf_drops")
    lat0, c0, t0 = run.col.stage.latency_count, cpu(), time.monotonic()
    fill = FillSampler(run.col.bp.reader)
    # churn at nice 10: on a 2-core host the generator (clients, servers and their
    # loopback softirqs) would otherwise starve the collector it is measuring
    out = subprocess.run(["nice", "-n", str(nice), "ip", "netns", "exec", CHURN, *cmd,
                          str(rate), str(secs), str(procs)], capture_output=True, text=True, check=True)
    gen_el = time.monotonic() - t0
    time.sleep(1.0)  # let the collector finish the tail
    fill.stop()
    el, used = time.monotonic() - t0, cpu() - c0
    n = int(out.stdout.strip() or 0)
    lat, src = run.latencies_since(lat0)
    by_source = {name: {"n": int((src == i).sum()), "p50_ms": _pct(lat[src == i], 50), "p99_ms": _pct(lat[src == i], 99)}
                 for name, i in (("open", 0), ("close_destroy", 1), ("close_bpf", 2))}
    return {
        "target_per_s": rate or "max", "achieved_per_s": round(n / gen_el), "connections": n,
        "ringbuf_drops": int(counter("xtcp2_bpf_ringbuf_drops_total") - d0),
        "destroy_overruns": int(counter("xtcp2_destroy_overruns_total") - o0),
        "ring_fill_max": round(fill.peak / run.col.bp.reader.size, 3),
        "drop_resyncs": int(counter("xtcp2_bpf_resyncs_total", reason="ringbuf_drops") - r0),
        "latency_p50_ms": _pct(lat, 50), "latency_p99_ms": _pct(lat, 99), "latency_samples": int(len(lat)),
        "latency_by_source": by_source,
        "collector_cpu_share": round(used / el, 3), "rss_mb": round(rss_mb(), 1),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000, help="idle connections (2x sockets)")
    ap.add_argument("--procs", type=int, default=6, help="population processes")
    ap.add_argument("--frequency", type=float, default=10.0)
    ap.add_argument("--window", type=float, default=30.0, help="seconds measured per idle mode")
    ap.add_argument("--rates", default="1000,2000,4000,0")
    ap.add_argument("--churn-seconds", type=float, default=8.0)
    ap.add_argument("--churn-procs", type=int, default=2)
    ap.add_argument("--churn-impl", choices=("c", "python"), default="c")
    ap.add_argument("--churn-nice", type=int, default=10, help="nice of the churn generator")
    ap.add_argument("--hogs", type=int, default=0, help="load mode: CPU hogs at nice 0 (see above)")
    ap.add_argument("--rate", type=float, default=5000.0, help="load mode: churn connections/s")
    ap.add_argument("--repeat", type=int, default=2, help="load mode: no-hog / hog pairs")
    ap.add_argument("--identity", action="store_true",
                    help="pid/comm enrichment on (the daemon's default; bpf owners from connect/listen)")
    a = ap.parse_args()
    global IDENTITY
    IDENTITY = a.identity
    if os.geteuid() != 0:
        print("bench_bpf: needs root (BPF, namespaces)", file=sys.stderr)
        return 2
    for n in (POP, CHURN):
        netns("del", n)
        netns("add", n)
    pop = None
    try:
        t0 = time.monotonic()
        pop = subprocess.Popen(["ip", "netns", "exec", POP, sys.executable, os.path.join(HERE, "population.py"),
                                "--connections", str(a.connections), "--procs", str(a.procs)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = pop.stdout.readline()
        if not line.startswith("READY"):
            raise SystemExit(f"population failed: {line!r}")
        print(f"population: {line.split()[1]} connections ({2 * int(line.split()[1])} sockets) "
              f"in {time.monotonic() - t0:.1f}s", flush=True)

        if a.hogs:
            return load_mode(a)
        results = {}
        results["poll"] = run_poll(a.frequency, a.window)
        print("poll      ", results["poll"], flush=True)
        for name, refresh in (("bpf", True), ("bpf-events", False)):
            run = BpfRun(a.frequency, refresh)
            try:
                results[name] = idle_window(run, a.window)
                print(f"{name:10}", results[name], flush=True)
                if not refresh:
                    rows = []
                    cmd = churn_command(a.churn_impl)
                    for r in [float(x) for x in a.rates.split(",") if x.strip()]:
                        row = churn(run, cmd, r, a.churn_seconds, a.churn_procs)
                        rows.append(row)
                        print("churn     ", row, flush=True)
                    results["churn"] = rows
            finally:
                run.close()
        p, b, e = (results[k]["cpu_s_per_min"] for k in ("poll", "bpf", "bpf-events"))
        resync_amortized = p / 10  # a full resync every 10x frequency costs one poll
        print("\nsummary (CPU seconds per minute of this process, lower is better)")
        print(f"  poll @ {a.frequency:g}s:           {p:.2f}")
        print(f"  bpf (events + refresh):   {b:.2f}   bpf/poll = {b / p:.2f}")
        print(f"  bpf events only:          {e:.2f}   bpf-events/poll = {e / p:.3f}  "
              f"(+{resync_amortized:.2f} amortized resync every {10 * a.frequency:g}s)")
        ok = [r for r in results.get("churn", []) if r["ringbuf_drops"] == 0 and r["destroy_overruns"] == 0]
        if ok:
            best = max(ok, key=lambda r: r["achieved_per_s"])
            print(f"  highest churn without drops: {best['achieved_per_s']} conn/s "
                  f"(p50 {best['latency_p50_ms']} ms, p99 {best['latency_p99_ms']} ms)")
        return 0
    finally:
        if pop is not None:
            pop.stdin.close()
            try:
                pop.wait(30)
            except subprocess.TimeoutExpired:
                pop.kill()
        for n in (POP, CHURN):
            netns("del", n)


def load_mode(a) -> int:
    """Churn at a.rate without and with a.hogs CPU hogs, alternately, one collector."""
    run = BpfRun(a.frequency, refresh=True)
    cmd = churn_command(a.churn_impl)
    rows: dict[int, list[dict]] = {0: [], a.hogs: []}
    try:
        for _ in range(a.repeat):
            for hogs in (0, a.hogs):
                procs = start_hogs(hogs)
                try:
                    time.sleep(0.5 if hogs else 0)
                    row = churn(run, cmd, a.rate, a.churn_seconds, a.churn_procs, a.churn_nice)
                finally:
                    stop_hogs(procs)
                row["hogs"] = hogs
                row["loadavg"] = os.getloadavg()[0]
                rows[hogs].append(row)
                print("churn     ", row, flush=True)
                time.sleep(1.0)
    finally:
        run.close()

    def total(h: int, k: str) -> float:
        return sum(r[k] for r in rows[h])

    cpu0 = total(0, "collector_cpu_share") / a.repeat
    cpu1 = total(a.hogs, "collector_cpu_share") / a.repeat
    print(f"\nsummary: churn {a.rate:g}/s target, {a.repeat} x {a.churn_seconds:g} s each, "
          f"{a.connections} idle connections, -frequency {a.frequency:g}s")
    for h in (0, a.hogs):
        print(f"  hogs={h}: achieved {total(h, 'achieved_per_s') / a.repeat:.0f}/s, ring drops {int(total(h, 'ringbuf_drops'))}, "
              f"destroy overruns {int(total(h, 'destroy_overruns'))}, "
              f"peak ring fill {max(r['ring_fill_max'] for r in rows[h]):.1%}, collector CPU {total(h, 'collector_cpu_share') / a.repeat:.1%} "
              f"of a core, p99 {max((r['latency_p99_ms'] or 0) for r in rows[h])} ms")
    print(f"  collector CPU with hogs / without = {cpu1 / cpu0:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
