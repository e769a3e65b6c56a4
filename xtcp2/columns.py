"""Column types shared by every producer and the encoder: the lowest layer of the data path.

A batch of records travels as `Columns`: field name (an XtcpFlatRecord field) -> column,
plus the row count `n`. Scalars are numpy arrays of length n (0 = unset); addresses and
strings are BytesColumn. Producers (the netlink decoder, BPF close events, a future BPF
iterator) build them; the record sink stamps, joins and encodes them.
"""
from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np


def unique(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of a, as np.unique(a). numpy 2.3+'s np.unique(a)
    first asks np.ma.is_masked(a), and the first touch of np.ma imports numpy.ma: 16 ms,
    a tenth of a one-shot `xtcp2 --once`. With the counts asked for, np.unique sorts
    instead and never looks at np.ma."""
    return np.unique(a, return_counts=True)[0]


def merge_sorted(big: list[np.ndarray], small: list[np.ndarray]) -> list[np.ndarray]:
    """Two tables of parallel arrays, each sorted by its first array (keys), merged into
    one sorted the same way: the small one's rows go in at their searchsorted places, one
    copy of the big one, no sort of it. Keys of small must be sorted and not in big."""
    at = np.searchsorted(big[0], small[0]) + np.arange(len(small[0]))
    old = np.ones(len(big[0]) + len(small[0]), bool)
    old[at] = False
    merged = []
    for b, s in zip(big, small):
        out = np.empty((len(old),) + b.shape[1:], b.dtype)
        out[at] = s
        out[old] = b
        merged.append(out)
    return merged


class BytesColumn:
    """Variable-length byte strings: row i is data[i, :lengths[i]]."""

    __slots__ = ("data", "lengths")

    def __init__(self, data: np.ndarray, lengths: np.ndarray) -> None:
        self.data = data          # (n, width) uint8
        self.lengths = lengths    # (n,) integer

    def __repr__(self) -> str:
        return f"BytesColumn({len(self)} rows, width {self.data.shape[1] if self.data.ndim == 2 else '?'})"

    def __len__(self) -> int:
        return len(self.lengths)

    def value(self, i: int) -> bytes:
        return self.data[i, : int(self.lengths[i])].tobytes()

    def take(self, rows: np.ndarray) -> "BytesColumn":
        return BytesColumn(self.data[rows], self.lengths[rows])


class Columns(dict):
    """field name -> np.ndarray | BytesColumn, every column `n` rows long.

    A dict, so producers fill it field by field; `n` is carried beside the fields
    (a batch can have rows and no columns yet, e.g. messages without attributes)."""

    __slots__ = ("n",)

    def __init__(self, n: int = 0, fields: Mapping[str, Any] | Iterable = ()) -> None:
        super().__init__(fields)
        self.n = int(n)

    def take(self, rows: np.ndarray) -> "Columns":
        """The subset `rows` of every column (-modulus, filters, dedupe)."""
        return Columns(len(rows), {k: (v.take(rows) if isinstance(v, BytesColumn) else v[rows])
                                   for k, v in self.items()})

    def copy(self) -> "Columns":
        return Columns(self.n, self)

    def rows(self, start: int, stop: int) -> "Columns":
        """Rows start..stop of every column, as views (no copy)."""
        stop = min(stop, self.n)

        def cut(v: Any) -> Any:
            if isinstance(v, BytesColumn):
                return BytesColumn(v.data[start:stop], v.lengths[start:stop])
            if isinstance(v, np.ndarray) and v.ndim == 0:
                return v
            return v[start:stop] if hasattr(v, "__len__") and len(v) == self.n else v
        return Columns(max(0, stop - start), {k: cut(v) for k, v in self.items()})

    def __repr__(self) -> str:
        return f"Columns(n={self.n}, fields={sorted(self)})"


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


def merge(parts: list[tuple[Columns, dict]]) -> tuple[Columns, dict]:
    """[(columns, constants)] -> one (columns, shared constants).

    Encoding has a fixed cost per call (planning ~120 fields), so many small batches
    cost far more than one. Constants that differ between parts (namespace, trigger...)
    become columns; those equal in every part stay constant. A column missing from a
    part is zero (unset) in its rows."""
    if len(parts) == 1:
        return parts[0]
    ns = [cols.n for cols, _ in parts]
    shared = {k: v for k, v in parts[0][1].items() if all(p[1].get(k, _MISSING) == v for p in parts[1:])}
    out = Columns(sum(ns))
    for k in {k for _, c in parts for k in c if k not in shared}:
        vals = [c.get(k) for _, c in parts]
        if any(isinstance(v, str) for v in vals):
            out[k] = _repeated_strings([(v or "").encode() for v in vals], ns)
        else:
            out[k] = np.concatenate([np.full(n, int(v or 0), np.uint64) for v, n in zip(vals, ns)])
    for k in {k for cols, _ in parts for k in cols}:
        cs = [cols.get(k) for cols, _ in parts]
        if any(isinstance(c, BytesColumn) for c in cs):
            out[k] = _concat_bytes(cs, ns)
        else:
            dt = np.result_type(*[c.dtype for c in cs if c is not None])
            out[k] = np.concatenate([np.asarray(c) if c is not None else np.zeros(n, dt) for c, n in zip(cs, ns)])
    return out, shared


_MISSING = object()
