"""Stage the records of one collector step and encode them in one call.

Encoding has a fixed cost per call (planning ~120 fields), so many small batches
(a destroy read here, a lookup there, per namespace and trigger) cost far more than
one. Values that differ between the staged parts (namespace, trigger, ...) become
columns; the rest stays constant.
"""
from __future__ import annotations

import numpy as np

from ..netlink.decode import BytesColumn, Columns

# per-part constants that become per-row columns when parts are merged
PER_PART = ("netns", "netns_inode", "nsid", "trigger", "socket_fd", "timestamp_ns")


def _repeated_strings(values: list[bytes], counts: list[int]) -> BytesColumn:
    """values[i] repeated counts[i] times, without a Python step per row."""
    width = max(1, max((len(v) for v in values), default=1))
    table = np.zeros((len(values), width), np.uint8)
    lens = np.zeros(len(values), np.uint16)
    for i, v in enumerate(values):
        table[i, :len(v)] = np.frombuffer(v, np.uint8)
        lens[i] = len(v)
    which = np.repeat(np.arange(len(values)), counts)
    return BytesColumn(table[which], lens[which])


def _concat_bytes(cols: list[BytesColumn | None], ns: list[int]) -> BytesColumn:
    width = max(c.data.shape[1] for c in cols if c is not None)
    datas, lens = [], []
    for c, n in zip(cols, ns):
        if c is None:
            datas.append(np.zeros((n, width), np.uint8))
            lens.append(np.zeros(n, np.uint16))
        else:
            d = c.data
            if d.shape[1] < width:
                d = np.pad(d, ((0, 0), (0, width - d.shape[1])))
            datas.append(d)
            lens.append(c.lengths.astype(np.uint16))
    return BytesColumn(np.concatenate(datas), np.concatenate(lens))


def merge(parts: list[tuple[Columns, int, dict]]) -> tuple[Columns, int, dict]:
    """[(columns, n, consts)] -> one (columns, n, shared consts)."""
    if len(parts) == 1:
        return parts[0]
    ns = [n for _, n, _ in parts]
    total = sum(ns)
    shared = {k: v for k, v in parts[0][2].items()
              if k not in PER_PART and all(p[2].get(k) == v for p in parts[1:])}
    out: Columns = {}
    varying = {k for _, _, c in parts for k in c if k not in shared}
    for k in varying:
        vals = [c.get(k) for _, _, c in parts]
        if any(isinstance(v, str) for v in vals):
            out[k] = _repeated_strings([(v or "").encode() for v in vals], ns)
        else:
            out[k] = np.concatenate([np.full(n, int(v or 0), np.uint64) for v, n in zip(vals, ns)])
    keys = {k for cols, _, _ in parts for k in cols if k != "_n"}
    for k in keys:
        cs = [cols.get(k) for cols, _, _ in parts]
        if any(isinstance(c, BytesColumn) for c in cs):
            out[k] = _concat_bytes(cs, ns)
        else:
            dt = np.result_type(*[c.dtype for c in cs if c is not None])
            out[k] = np.concatenate([np.asarray(c) if c is not None else np.zeros(n, dt) for c, n in zip(cs, ns)])
    return out, total, shared
