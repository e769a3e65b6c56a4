"""How many connection lifecycles per second can --mode bpf absorb? Kernel side and
user side measured separately, because on a small host no generator can produce the
load the collector can take (benchmarks/churn.c tops out near 10k connections/s on
2 cores, while the same cores also run the collector).

1. Record: the real BPF programs are loaded and benchmarks/churn.c runs as fast as it
   can in a namespace for --seconds; every ring buffer record is kept. The kernel's
   own accounting (kernel.bpf_stats_enabled) gives the programs' cost per event.
2. Replay: the recorded records are fed, unchanged, to a BpfMode in place of
   its ring buffer reader, in slices of what one step would hold at the target rate
   (--rate lifecycles/s x --step seconds). Each slice is one collector step: ingest,
   open filtering, close records (encoded, marshalled, sent to the null destination).
   The time per step gives the highest sustainable rate: events per step / seconds
   per step. A rate is sustainable when a step takes less than --step.

Reference, in the same process: copying the same records out of memory (what the
ring buffer reader does) - the floor any consumer pays.

    python benchmarks/bench_bpf_capacity.py --seconds 6 --rate 50000
"""
from __future__ import annotations

import argparse
import json
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
from xtcp2.ebpf import tcp_events as E  # noqa: E402
from xtcp2.ebpf import loader  # noqa: E402
from xtcp2.netns.registry import NamespaceTable  # noqa: E402
from xtcp2.pipeline import Emitter  # noqa: E402

NS = "xtcp2bpfcap"
HERE = os.path.dirname(os.path.abspath(__file__))


def cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_THREAD)
    return ru.ru_utime + ru.ru_stime


def bpftool_json(*args: str):
    return json.loads(subprocess.run(["bpftool", "-j", *args], check=True, capture_output=True, text=True).stdout)


def state_prog_stats(name: str = loader.PROG_BTF) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of our attached state-change program."""
    for p in bpftool_json("prog", "show"):
        if p.get("name", "") == name[:15]:
            return int(p.get("run_time_ns", 0)), int(p.get("run_cnt", 0))
    return 0, 0


def record(seconds: float, procs: int) -> tuple[list[np.ndarray], int, dict]:
    """Run churn at full speed with the programs attached; keep every ring record."""
    exe = f"/tmp/xtcp2-capacity-churn-{os.getpid()}"
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "churn.c")], check=True)
    subprocess.run(["sysctl", "-qw", "kernel.bpf_stats_enabled=1"], check=True)
    bp = loader.load(loader.LoadOptions(watch_netns=False))
    recs: list[np.ndarray] = []
    stop = threading.Event()

    def drain() -> None:
        while not stop.is_set():
            r = bp.reader.read()
            if len(r):
                recs.append(r)
            else:
                bp.reader.wait(0.05)
        recs.append(bp.reader.read())

    t = threading.Thread(target=drain)
    t.start()
    try:
        ns0, c0 = state_prog_stats()
        t0 = time.monotonic()
        out = subprocess.run(["ip", "netns", "exec", NS, exe, "0", str(seconds), str(procs)],
                             check=True, capture_output=True, text=True)
        gen = time.monotonic() - t0
        ns1, c1 = state_prog_stats()
        time.sleep(0.3)
    finally:
        stop.set()
        t.join()
        drops = bp.drop_counts()[0]
        bp.close()
        os.unlink(exe)
    conns = int(out.stdout.strip())
    kernel = {"connections": conns, "generated_per_s": round(conns / gen), "ringbuf_drops": drops,
              "prog_runs": c1 - c0, "prog_ns_per_run": round((ns1 - ns0) / max(1, c1 - c0), 1)}
    return recs, conns, kernel


class Replay:
    """Stands in for loader.BpfProgram: the recorded records, one slice per read."""

    attach_kind = "replay"
    fallback_reason = ""

    def __init__(self, recs: np.ndarray, per_read: int) -> None:
        self.reader = self
        self.recs = recs
        self.per_read = self.per_step = per_read
        self.pos = 0

    def read(self, max_records: int = 65536) -> np.ndarray:
        n = min(self.per_read, max_records, len(self.recs) - self.pos)
        out = self.recs[self.pos:self.pos + n].copy()  # the real reader copies out too
        self.pos += n
        self.per_read = 0  # one slice per collector step: its next read finds the ring empty
        return out

    def next_step(self) -> None:
        self.per_read = self.per_step

    def drop_counts(self) -> tuple[int, int]:
        return 0, 0

    def close(self) -> None:
        pass


def replay(recs: np.ndarray, per_step: int) -> dict:
    cfg = Config(mode="bpf", dest="null", poll_frequency=10.0, netns=[NS]).validate()
    table = NamespaceTable(cfg.netns, cfg.packet_size, cfg.nl_timeout_milliseconds, cfg.populate_nsid)
    emitter = Emitter(cfg)
    sink = RecordSink(cfg, emitter)
    poller = NetlinkCollector(cfg, table, sink)
    col = BpfMode(cfg, Parts(table, poller, sink), use_destroy_groups=False)
    try:
        col._reconcile()
        rp = Replay(recs, per_step)
        col.bp = rp
        steps, times = 0, []
        c0, t0 = cpu(), time.perf_counter()
        while rp.pos < len(recs):
            rp.next_step()
            s = time.perf_counter()
            col.step()
            times.append(time.perf_counter() - s)
            steps += 1
        col.step(force=True)
        el, used = time.perf_counter() - t0, cpu() - c0
        col.bp = None
        times = np.array(times)
        return {"events": len(recs), "steps": steps, "events_per_step": per_step,
                "step_ms_p50": round(float(np.percentile(times, 50)) * 1e3, 2),
                "step_ms_p99": round(float(np.percentile(times, 99)) * 1e3, 2),
                "events_per_s": round(len(recs) / el), "cpu_share": round(used / el, 2),
                "records": dict(col.stats)}
    finally:
        col.close(), poller.close(), emitter.close(), table.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=6.0, help="churn recording time")
    ap.add_argument("--procs", type=int, default=2, help="churn client (and server) processes")
    ap.add_argument("--rate", type=float, default=50000.0, help="target lifecycles/s for the step size")
    ap.add_argument("--step", type=float, default=0.01, help="seconds of events per collector step")
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_bpf_capacity: needs root (BPF, namespaces)", file=sys.stderr)
        return 2
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    try:
        recs, conns, kernel = record(a.seconds, a.procs)
        allrec = np.concatenate(recs)
        ev = allrec["ev"]
        mine = allrec[(ev["netns_ino"] == os.stat(f"/run/netns/{NS}").st_ino) & (ev["kind"] == E.EV_STATE)]
        per_conn = len(mine) / max(1, conns)
        print(f"record: {kernel}; {len(mine)} events = {per_conn:.2f} per connection", flush=True)
        t0 = time.perf_counter()
        for _ in range(5):
            mine.copy()
        copy_s = (time.perf_counter() - t0) / 5
        per_step = max(1, int(a.rate * per_conn * a.step))
        rp = replay(mine, per_step)
        print(f"replay:  {rp}", flush=True)
        sustain = rp["events_per_step"] / (rp["step_ms_p50"] / 1e3) / per_conn
        print("\nsummary")
        print(f"  kernel: BPF state program {kernel['prog_ns_per_run']} ns per run "
              f"({kernel['prog_runs']} runs), generator {kernel['generated_per_s']} connections/s, "
              f"{kernel['ringbuf_drops']} ring drops")
        print(f"  user:   {per_step} events per {a.step * 1e3:g} ms step (= {a.rate:g} lifecycles/s): "
              f"step p50 {rp['step_ms_p50']} ms, p99 {rp['step_ms_p99']} ms -> sustains "
              f"~{sustain:,.0f} lifecycles/s on one core ({'meets' if rp['step_ms_p99'] < a.step * 1e3 else 'misses'} "
              f"the step budget at p99)")
        print(f"  reference: copying the records alone runs at {len(mine) / copy_s / per_conn:,.0f} lifecycles/s "
              f"(collector/copy = {len(mine) / copy_s / rp['events_per_s']:.0f}x)")
        return 0
    finally:
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)


if __name__ == "__main__":
    raise SystemExit(main())
