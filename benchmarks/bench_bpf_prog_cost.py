"""Kernel cost of the bpf-mode state program per run: tp_btf against the classic
tracepoint fallback, same churn, same run.

The kernel's own accounting (sysctl kernel.bpf_stats_enabled=1) adds the run time and
count of every program; they are read from our own program fds (BPF_OBJ_GET_INFO_BY_FD),
so programs other processes loaded (other collectors, tests) do not mix in. For each
round and each attach kind, the tcp_events object is loaded with only the state
program attached (no namespace watch), a thread drains the ring buffer as the daemon
would, and benchmarks/churn.c runs at --rate connections/s in a private namespace.

The classic tracepoint is the reference: it reads every field through probe reads
(its context holds a raw pointer), the tp_btf program through BTF pointers.

    python benchmarks/bench_bpf_prog_cost.py [--rate 5000] [--seconds 4] [--rounds 3]
        [--baseline-object /tmp/old/tcp_events.bpf.o]

The ring buffer is read at the daemon's cadence (at most once per 10 ms step while
events flow), so the kernel's wakeups cost what they cost under the daemon.

bpf_stats itself costs ~2 clock reads per run (tens of ns); both kinds pay it.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from xtcp2.ebpf import libbpf, loader  # noqa: E402

NS = "bpfload-progcost"
HERE = os.path.dirname(os.path.abspath(__file__))
STATS_SYSCTL = "/proc/sys/kernel/bpf_stats_enabled"
MIN_STEP = 0.01


class ProgInfo(ctypes.Structure):
    """struct bpf_prog_info up to run_cnt (include/uapi/linux/bpf.h); the kernel fills
    what fits in the length we pass."""
    _fields_ = [("type", ctypes.c_uint32), ("id", ctypes.c_uint32), ("tag", ctypes.c_uint8 * 8),
                ("jited_prog_len", ctypes.c_uint32), ("xlated_prog_len", ctypes.c_uint32),
                ("jited_prog_insns", ctypes.c_uint64), ("xlated_prog_insns", ctypes.c_uint64),
                ("load_time", ctypes.c_uint64), ("created_by_uid", ctypes.c_uint32),
                ("nr_map_ids", ctypes.c_uint32), ("map_ids", ctypes.c_uint64), ("name", ctypes.c_char * 16),
                ("ifindex", ctypes.c_uint32), ("gpl_compatible", ctypes.c_uint32),
                ("netns_dev", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64),
                ("nr_jited_ksyms", ctypes.c_uint32), ("nr_jited_func_lens", ctypes.c_uint32),
                ("jited_ksyms", ctypes.c_uint64), ("jited_func_lens", ctypes.c_uint64),
                ("btf_id", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("nr_func_info", ctypes.c_uint32),
                ("nr_line_info", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("jited_line_info", ctypes.c_uint64), ("nr_jited_line_info", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("jited_line_info_rec_size", ctypes.c_uint32),
                ("nr_prog_tags", ctypes.c_uint32), ("prog_tags", ctypes.c_uint64),
                ("run_time_ns", ctypes.c_uint64), ("run_cnt", ctypes.c_uint64)]


def prog_stats(lib, fd: int) -> tuple[int, int, int]:
    """(run_time_ns, run_cnt, xlated instructions) of one program fd."""
    info = ProgInfo()
    n = ctypes.c_uint32(ctypes.sizeof(info))
    libbpf.check_int("bpf_obj_get_info_by_fd", lib.bpf_obj_get_info_by_fd(fd, ctypes.byref(info), ctypes.byref(n)))
    return info.run_time_ns, info.run_cnt, info.xlated_prog_len // 8


def build_churn() -> str:
    exe = f"/tmp/bpfload-progcost-churn-{os.getpid()}"
    subprocess.run(["gcc", "-O2", "-o", exe, os.path.join(HERE, "churn.c")], check=True)
    return exe


def measure(label: str, exe: str, rate: float, seconds: float, procs: int, objects: dict) -> dict:
    lib = libbpf.load()
    lib.bpf_obj_get_info_by_fd.restype = ctypes.c_int
    lib.bpf_obj_get_info_by_fd.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
    kind, _, which = label.partition("@")
    bp = loader.load(loader.LoadOptions(watch_netns=False, prefer=kind), objects.get(which))
    assert bp.attach_kind == kind, (kind, bp.attach_kind, bp.fallback_reason)
    name = loader.PROG_BTF if kind == "tp_btf" else loader.PROG_TP
    fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(bp.obj, name.encode()))
    stop = threading.Event()
    events = [0]

    def drain() -> None:
        # the daemon's cadence: after a read with events, at most one read per min_step
        # (BpfMode's 10 ms), so the kernel's wakeup (an IPI, queued when a record lands
        # on a caught-up consumer) happens about once per step, not once per event
        while not stop.is_set():
            n = len(bp.reader.read())
            events[0] += n
            if n:
                time.sleep(MIN_STEP)
            else:
                bp.reader.wait(0.05)
        events[0] += len(bp.reader.read())

    t = threading.Thread(target=drain)
    t.start()
    try:
        ns0, c0, insns = prog_stats(lib, fd)
        t0 = time.monotonic()
        out = subprocess.run(["ip", "netns", "exec", NS, exe, str(rate), str(seconds), str(procs)],
                             check=True, capture_output=True, text=True)
        gen = time.monotonic() - t0
        ns1, c1, _ = prog_stats(lib, fd)
    finally:
        stop.set()
        t.join()
        drops = bp.drop_counts()[0]
        bp.close()
    conns = int(out.stdout.strip())
    runs = c1 - c0
    return {"kind": label, "connections": conns, "per_s": round(conns / gen), "runs": runs,
            "runs_per_conn": round(runs / max(1, conns), 2), "ns_per_run": round((ns1 - ns0) / max(1, runs), 1),
            "xlated_insns": insns, "ring_events": events[0], "ring_drops": drops}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=5000.0, help="churn connections/s (0 = as fast as it goes)")
    ap.add_argument("--seconds", type=float, default=4.0, help="churn per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="tp_btf / tracepoint pairs, alternating")
    ap.add_argument("--procs", type=int, default=2, help="churn client (and server) processes")
    ap.add_argument("--kinds", default="tp_btf,tracepoint", help="attach kinds to measure")
    ap.add_argument("--baseline-object", type=Path,
                    help="another build of tcp_events.bpf.o (e.g. of an older commit), measured as tp_btf@base")
    a = ap.parse_args()
    kinds = [k for k in a.kinds.split(",") if k]
    objects = {"": None}
    if a.baseline_object:
        objects["base"] = a.baseline_object
        kinds.append("tp_btf@base")
    if os.geteuid() != 0:
        print("bench_bpf_prog_cost: needs root (BPF, namespaces, sysctl)", file=sys.stderr)
        return 2
    with open(STATS_SYSCTL) as f:
        stats_before = f.read().strip()
    subprocess.run(["ip", "netns", "del", NS], capture_output=True)
    subprocess.run(["ip", "netns", "add", NS], check=True)
    subprocess.run(["ip", "-n", NS, "link", "set", "lo", "up"], check=True)
    exe = build_churn()
    rows: dict[str, list[dict]] = {k: [] for k in kinds}
    try:
        with open(STATS_SYSCTL, "w") as f:
            f.write("1")
        for r in range(a.rounds):
            order = kinds if r % 2 == 0 else kinds[::-1]
            for kind in order:
                row = measure(kind, exe, a.rate, a.seconds, a.procs, objects)
                rows[kind].append(row)
                print(row, flush=True)
    finally:
        with open(STATS_SYSCTL, "w") as f:
            f.write(stats_before)
        subprocess.run(["ip", "netns", "del", NS], capture_output=True)
        os.unlink(exe)

    def med(kind: str) -> float:
        v = sorted(x["ns_per_run"] for x in rows[kind])
        return v[len(v) // 2]

    print("\nsummary (median of rounds; ns per run from bpf_stats)")
    for k in kinds:
        print(f"  {k:12}  {med(k):7.1f} ns/run  ({rows[k][0]['xlated_insns']} insns)")
    for k in kinds[1:]:
        print(f"  {kinds[0]}/{k} = {med(kinds[0]) / med(k):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
