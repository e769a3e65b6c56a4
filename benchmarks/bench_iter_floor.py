"""Where the BPF iterator's read time goes: the kernel's walk, the program's reads and
the copies, each as a ratio to the raw inet_diag dump of the same namespace, in one run.

The iterator program (bpf/tcp_iter.bpf.c) is built again in a temporary directory in
variants that each leave one part out, by text replacement in its source (a variant
whose anchor is not found stops the benchmark: the source moved on, update the anchors):
  full      the program as shipped
  nowrite   everything but bpf_seq_write (the record copies left out)
  common    the fields every socket has, written; no full-socket attributes
  walk      returns at once: the kernel's walk alone (batching, socket lock and
            reference, calling the program) with no program work and no output
and without each of the full-socket parts: tcp_info's rest, its counters, fill_attrs,
fill_mem, fill_timer. Each is read to its end into one reused buffer, interleaved with
the raw `recv` of the dump, `--repeat` times. Needs clang (as `make -C bpf` does).

    python benchmarks/bench_iter_floor.py --connections 50000 [--repeat 9]
"""
from __future__ import annotations

import argparse
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from bench_poll import interleaved, populated_netns, raw_dump  # noqa: E402
from xtcp2.config import DEFAULT_DESERIALIZERS  # noqa: E402
from xtcp2.ebpf.tcp_iter import REC_SIZE, TcpIterProgram  # noqa: E402
from xtcp2.netlink import constants as c  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NS = f"xtcp2itfloor-{os.getpid()}"
WRITE = "\tbpf_seq_write(seq, r, sizeof(*r));\n"
VARIANTS: dict[str, list[tuple[str, str]]] = {
    "full": [],
    "nowrite": [(WRITE, "")],
    "common": [("\t\tfill_full(r, tp, ctx->uid);\n", "")],
    "walk": [("\tif (!skc)\n\t\treturn 0;\n", "\treturn 0;\n")],
    "-ti_rest": [("\txtcp2_ti_rest(&r->ti, tp);\n", "")],
    "-ti_counters": [("\txtcp2_ti_counters(&r->ti, tp);\n", "")],
    "-fill_attrs": [("\tfill_attrs(r, tp, uid);\n", "")],
    "-fill_mem": [("\tfill_mem(r, tp);\n", "")],
    "-fill_timer": [("\tfill_timer(r, tp);\n", "")],
}


def build(tmp: Path) -> dict[str, Path]:
    src = (ROOT / "bpf" / "tcp_iter.bpf.c").read_text()
    arch = os.uname().machine.replace("x86_64", "x86").replace("aarch64", "arm64")
    out = {}
    for name, edits in VARIANTS.items():
        text = src
        for old, new in edits:
            if text.count(old) != 1:
                raise SystemExit(f"bench_iter_floor: variant {name}: anchor {old.strip()!r} not found once "
                                 f"in bpf/tcp_iter.bpf.c")
            text = text.replace(old, new)
        stem = name.strip("-").replace("-", "_")
        c_file, obj = tmp / f"{stem}.bpf.c", tmp / f"{stem}.bpf.o"
        c_file.write_text(text)
        subprocess.run(["clang", "-g", "-O2", "-target", "bpf", f"-D__TARGET_ARCH_{arch}", "-Wall",
                        "-Wno-unused-function", f"-I{ROOT / 'bpf'}", "-c", str(c_file), "-o", str(obj)], check=True)
        out[name] = obj
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=50000)
    ap.add_argument("--v6-share", type=float, default=0.34)
    ap.add_argument("--repeat", type=int, default=9)
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    tmp = tempfile.TemporaryDirectory(prefix="xtcp2-itfloor-")
    objects = build(Path(tmp.name))
    progs: dict[str, TcpIterProgram] = {}
    try:
        with populated_netns(NS, args.connections, args.v6_share) as (run_in, diag):
            ext = c.ext_mask(DEFAULT_DESERIALIZERS)
            progs = {name: TcpIterProgram.load(obj) for name, obj in objects.items()}
            buf = mmap.mmap(-1, 1 << 20)
            mv = memoryview(buf)
            segments = [mv[i:i + 32768] for i in range(0, len(buf), 32768)]

            def read(prog: TcpIterProgram) -> int:
                fd = run_in(prog.create_fd)
                total = 0
                try:
                    while n := os.readv(fd, segments):
                        total += n
                finally:
                    os.close(fd)
                return total

            fns = {"raw": lambda: raw_dump(diag.sock, ext)} | {name: (lambda p=p: read(p)) for name, p in progs.items()}
            times = interleaved(fns, args.repeat)
            med = {k: statistics.median(v) for k, v in times.items()}
            print(f"population: {args.connections} connections, {read(progs['full']) // REC_SIZE} sockets in {NS}")
            for k in fns:
                delta = "" if k in ("raw", "full") else f"   full - this = {(med['full'] - med[k]) / med['raw']:+.3f}x"
                print(f"{k:14s} {med[k] * 1e3:8.1f} ms   {med[k] / med['raw']:.3f}x raw   "
                      f"min {min(times[k]) * 1e3:.1f} ms{delta}")
            print(f"load average at the start {load0:.2f}, at the end {os.getloadavg()[0]:.2f}")
            return 0
    finally:
        for p in progs.values():
            p.close()
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
