"""encode_rows (columnar numpy encoder) against the protobuf library, same process.

References: the same records as XtcpFlatRecord messages serialized with
SerializeToString (upb, C) as one Envelope - serialization alone ("upb"), and
building the messages from the same columns plus serialization ("upb+build", what a
collector without the columnar encoder would pay). encode_rows is timed from columns to the same
bytes (checked equal). Inputs: close records as --mode bpf builds them
(close_columns on BPF events with most fields set), small batches (what one
collector step emits) and large ones (a poll).

    python benchmarks/bench_encode.py
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import numpy as np  # noqa: E402

from xtcp2.ebpf.tcp_events import EVENT_DTYPE  # noqa: E402
from xtcp2.ebpf.records import close_columns  # noqa: E402
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb  # noqa: E402
from xtcp2.columns import BytesColumn  # noqa: E402
from xtcp2.records.encode import encode_rows  # noqa: E402

CONSTS = {"schema_version": 1, "daemon_version": "0.1", "hostname": "h", "trigger": 2,
          "timestamp_ns": time.time_ns(), "netns": "x", "netns_inode": 5}


def events(n: int, rng: np.random.Generator) -> np.ndarray:
    ev = np.zeros(n, EVENT_DTYPE)
    for name in EVENT_DTYPE.names:
        dt = EVENT_DTYPE[name]
        if name in ("saddr", "daddr"):
            ev[name] = rng.integers(0, 256, (n, 16), dtype=np.uint8)
        elif name == "ca_name":
            ev[name] = rng.choice([b"cubic", b"bbr"], n)
        elif name == "family":
            ev[name] = rng.choice([2, 10], n)
        elif not name.startswith("_"):
            bits = min(dt.itemsize * 8, 40)
            ev[name] = rng.integers(0, 2 ** bits, n, dtype=np.uint64) >> rng.integers(0, bits, n).astype(np.uint64)
    return ev


def messages(cols: dict, n: int) -> list:
    out = []
    for i in range(n):
        m = pb.XtcpFlatRecord(**CONSTS)
        for k, v in cols.items():
            setattr(m, k, v.value(i) if isinstance(v, BytesColumn) else int(v[i]))
        out.append(m)
    return out


def timed(fn, budget: float = 0.5) -> float:
    """Best of as many runs as fit in budget seconds (at least one)."""
    best, end = float("inf"), time.perf_counter() + budget
    while best == float("inf") or time.perf_counter() < end:
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> int:
    rng = np.random.default_rng(7)
    print(f"{'rows':>7} {'encode_rows ms':>15} {'upb ms':>9} {'upb+build ms':>13} "
          f"{'upb/ours':>9} {'upb+build/ours':>15}")
    for n in (1, 20, 100, 1000, 10000, 100000):
        cols = close_columns(events(n, rng))
        msgs = messages(cols, n)
        env = pb.Envelope()
        env.row.extend(msgs)
        body, _ = encode_rows(cols, n, CONSTS)
        assert body == env.SerializeToString(), "encode_rows output differs from protobuf"
        ours = timed(lambda: encode_rows(cols, n, CONSTS))
        ref = timed(lambda: env.SerializeToString())
        build = timed(lambda: pb.Envelope(row=messages(cols, n)).SerializeToString(), budget=0.5 if n < 10000 else 0)
        print(f"{n:>7} {ours * 1e3:>15.3f} {ref * 1e3:>9.3f} {build * 1e3:>13.1f} "
              f"{ref / ours:>9.2f} {build / ours:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
