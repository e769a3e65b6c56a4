"""The iterator's collection step in parts, against the raw inet_diag dump, in one run.

Builds N loopback connections (2N sockets) in a fresh namespace, then measures,
interleaved, `--repeat` times each:
  raw      recv of the whole inet_diag dump (v4 + v6, default extensions), no parsing:
           the reference (bench_poll.py's `raw recv`)
  read     every iterator record read into one reused buffer (as the collector's
           are), nothing built
  convert  to_columns() over the records of one such read, chunk by chunk (the
           production buffer size): the part of the collection step that is Python
  collect  IterCollector.columns() as the poll runs it: a reader thread that only
           reads, a converter thread beside it (bench_poll.py's `iter collect`)
Prints medians, per 100,000 sockets and as ratios to raw. With --profile, also a
cProfile of convert (cumulative time, top functions).

    python benchmarks/bench_iter_columns.py --connections 30000 [--repeat 7] [--profile]
"""
from __future__ import annotations

import argparse
import cProfile
import mmap
import os
import pstats
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

import numpy as np  # noqa: E402

from bench_poll import interleaved, populated_netns, raw_dump  # noqa: E402
from xtcp2.collect import iter as T  # noqa: E402
from xtcp2.config import DEFAULT_DESERIALIZERS  # noqa: E402
from xtcp2.ebpf.tcp_iter import DEFAULT_BUFFER, ITER_DTYPE, TcpIterProgram  # noqa: E402
from xtcp2.netlink import constants as c  # noqa: E402

NS = f"xtcp2itcol-{os.getpid()}"


def read_all(fd: int, buf: bytearray, keep: bool) -> list[bytes]:
    """Every record of the walk, read chunk by chunk into buf; with keep, the chunks
    (copies, kept for convert)."""
    chunks, carry, eof = [], b"", False
    while not eof:
        count, carry, eof = T._fill(fd, buf, carry)
        if keep:
            chunks.append(bytes(buf[:count * ITER_DTYPE.itemsize]))
    return chunks


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--connections", type=int, default=30000)
    ap.add_argument("--v6-share", type=float, default=0.34)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    with populated_netns(NS, args.connections, args.v6_share) as (run_in, diag):
        prog = TcpIterProgram.load()
        itc = T.IterCollector(prog)
        ext = c.ext_mask(DEFAULT_DESERIALIZERS)
        wanted = c.wanted_attrs(DEFAULT_DESERIALIZERS)

        buf = mmap.mmap(-1, DEFAULT_BUFFER)

        def read(keep: bool = False) -> list[bytes]:
            fd = run_in(prog.create_fd)
            try:
                return read_all(fd, buf, keep)
            finally:
                os.close(fd)

        chunks = read(keep=True)
        recs = [np.frombuffer(b, ITER_DTYPE) for b in chunks]
        sockets = sum(len(r) for r in recs)

        def convert() -> int:
            return sum(T.to_columns(r, wanted).n for r in recs)

        def collect() -> int:
            return sum(cols.n for cols in itc.columns(run_in, wanted))

        fns = {"raw": lambda: raw_dump(diag.sock, ext), "read": read, "convert": convert, "collect": collect}
        times = interleaved(fns, args.repeat, warmup=2)
        med = {k: statistics.median(v) for k, v in times.items()}
        per = 100_000 / sockets
        print(f"population: {args.connections} connections, {sockets} sockets in {len(recs)} chunks "
              f"of <= {max(len(r) for r in recs)} records")
        for k in fns:
            print(f"{k:8s} {med[k] * 1e3:8.1f} ms   {med[k] * per * 1e3:7.1f} ms per 100k   "
                  f"{med[k] / med['raw']:.3f}x raw   min {min(times[k]) * 1e3:.1f} ms")
        print(f"load average at the start {load0:.2f}, at the end {os.getloadavg()[0]:.2f}")
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            for _ in range(5):
                convert()
            prof.disable()
            pstats.Stats(prof).sort_stats("tottime").print_stats(20)
        itc.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
