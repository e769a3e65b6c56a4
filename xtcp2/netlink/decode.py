"""Columnar decoder: many inet_diag messages at once into per-field numpy columns.

No Python work per socket or per field: the rtattr chains of all messages are walked
in lockstep (one numpy step per attribute position, ~12 steps per chunk), and every
struct is gathered for all sockets that carry it with one fancy index, then split into
fields by a structured dtype view. Every read is bounded by the length the kernel
wrote: nlmsg_len for the message and rta_len for each attribute.

Output: `Columns`, a dict keyed by XtcpFlatRecord field names. Scalars are numpy
arrays of length n (0 = unset); addresses and strings are BytesColumn.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from . import constants as c
from . import layouts as L


@dataclass
class BytesColumn:
    """Variable-length byte strings: row i is data[i, :lengths[i]]."""

    data: np.ndarray      # (n, width) uint8
    lengths: np.ndarray   # (n,) integer

    def __len__(self) -> int:
        return len(self.lengths)

    def value(self, i: int) -> bytes:
        return self.data[i, : int(self.lengths[i])].tobytes()

    def take(self, rows: np.ndarray) -> "BytesColumn":
        return BytesColumn(self.data[rows], self.lengths[rows])


Columns = dict  # str -> np.ndarray | BytesColumn


def _struct_dtype(fields, itemsize: int) -> np.dtype:
    names, formats, offsets = [], [], []
    for name, off, fmt in fields:
        if off + np.dtype(fmt).itemsize <= itemsize:
            names.append(name)
            formats.append(fmt)
            offsets.append(off)
    return np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": itemsize})


_DTYPE_CACHE: dict = {}


def _dtype_for(key, fields, itemsize: int) -> np.dtype:
    dt = _DTYPE_CACHE.get((key, itemsize))
    if dt is None:
        dt = _DTYPE_CACHE[(key, itemsize)] = _struct_dtype(fields, itemsize)
    return dt


_AR = np.arange(4096, dtype=np.int64)


def _gather_bytes(words: np.ndarray, byte_offsets: np.ndarray, nbytes: int) -> np.ndarray:
    """(k, ceil(nbytes/4)*4) uint8 copy of the 4-aligned structs at byte_offsets."""
    nw = (nbytes + 3) >> 2
    idx = (byte_offsets >> 2)[:, None] + _AR[:nw]
    return words[idx].view(np.uint8).reshape(len(byte_offsets), nw * 4)


def _scatter_struct(cols: Columns, n: int, key, fields, raw: np.ndarray, rows: np.ndarray, length: int) -> None:
    """Split gathered struct bytes into named columns for `rows`."""
    dt = _dtype_for(key, fields, raw.shape[1])
    if not dt.names:
        return
    rec = raw.view(dt).reshape(-1)
    for name in dt.names:
        if dt.fields[name][1] + dt.fields[name][0].itemsize > length:
            continue  # straddles the end of what the kernel sent
        vals = rec[name]
        col = cols.get(name)
        if col is None:
            col = cols[name] = np.zeros(n, dtype=vals.dtype.newbyteorder("="))
        col[rows] = vals


def _group_by_length(lengths: np.ndarray):
    """Yield (length, selector) per distinct payload length (usually a single one)."""
    if len(lengths) == 0:
        return
    first = lengths[0]
    if (lengths == first).all():
        yield int(first), slice(None)
        return
    for ln in np.unique(lengths):
        yield int(ln), np.flatnonzero(lengths == ln)


def decode_messages(buf, offsets, wanted: frozenset[int] | None = None, used: int | None = None) -> Columns:
    """Decode the SOCK_DIAG_BY_FAMILY messages starting at `offsets` in `buf`.

    `offsets` must be 4-aligned (the reader guarantees it). `wanted` restricts which
    attribute types are decoded (None = all). Malformed messages are dropped and
    attributes that overrun their message end the walk of that message; both are
    counted in xtcp2_decode_errors_total.
    """
    used = len(buf) if used is None else used
    words = np.frombuffer(buf, dtype="<u4", count=used >> 2)
    offs = np.frombuffer(offsets, dtype=np.uint32).astype(np.int64) if not isinstance(offsets, np.ndarray) else offsets.astype(np.int64)
    if len(offs) == 0:
        return {"_n": 0}
    nlen = words[offs >> 2].astype(np.int64)
    ok = (nlen >= c.NLMSG_HDRLEN + c.INET_DIAG_MSG_LEN) & (offs + nlen <= used) & ((offs & 3) == 0)
    if not ok.all():
        metrics.DECODE_ERRORS.labels("inet_diag_msg").inc(int((~ok).sum()))
        offs, nlen = offs[ok], nlen[ok]
    n = len(offs)
    cols: Columns = {"_n": n}
    if n == 0:
        return cols

    # struct inet_diag_msg
    body = offs + c.NLMSG_HDRLEN
    raw = _gather_bytes(words, body, c.INET_DIAG_MSG_LEN)
    _scatter_struct(cols, n, "msg", L.INET_DIAG_MSG, raw, slice(None), c.INET_DIAG_MSG_LEN)
    fam = cols["inet_diag_msg_family"]
    addr_len = np.where(fam == c.AF_INET6, 16, 4).astype(np.uint8)
    cols["inet_diag_msg_socket_source"] = BytesColumn(raw[:, L.SRC_OFFSET:L.SRC_OFFSET + 16].copy(), addr_len)
    cols["inet_diag_msg_socket_destination"] = BytesColumn(raw[:, L.DST_OFFSET:L.DST_OFFSET + 16].copy(), addr_len)

    # Walk all rtattr chains in lockstep.
    cur = body + c.INET_DIAG_MSG_LEN
    end = offs + nlen
    a_rows, a_types, a_offs, a_lens = [], [], [], []
    active = np.flatnonzero(cur + 4 <= end)
    bad_attrs = 0
    while len(active):
        pos = cur[active]
        rta = words[pos >> 2]
        alen = (rta & 0xFFFF).astype(np.int64)
        atype = (rta >> 16) & 0x3FFF
        good = (alen >= 4) & (pos + alen <= end[active])
        if not good.all():
            bad_attrs += int((~good).sum())
            cur[active[~good]] = end[active[~good]]  # stop walking a damaged message
            active, pos, alen, atype = active[good], pos[good], alen[good], atype[good]
        a_rows.append(active)
        a_types.append(atype)
        a_offs.append(pos + 4)
        a_lens.append(alen - 4)
        cur[active] = pos + ((alen + 3) & ~3)
        active = active[cur[active] + 4 <= end[active]]
    if bad_attrs:
        metrics.DECODE_ERRORS.labels("rtattr").inc(bad_attrs)
    if not a_rows:
        return cols
    a_rows = np.concatenate(a_rows)
    a_types = np.concatenate(a_types)
    a_offs = np.concatenate(a_offs)
    a_lens = np.concatenate(a_lens)

    for atype in np.unique(a_types).tolist():
        if wanted is not None and atype not in wanted:
            continue
        sel = np.flatnonzero(a_types == atype)
        rows, poffs, plens = a_rows[sel], a_offs[sel], a_lens[sel]
        if atype == c.INET_DIAG_CONG:
            _decode_cong(cols, n, words, rows, poffs, plens)
            continue
        fields = L.SCALAR_ATTRS.get(atype)
        if fields is None:
            continue  # an attribute this schema has no column for (MARK, PROTOCOL, ...)
        for length, g in _group_by_length(plens):
            if length <= 0:
                continue
            raw = _gather_bytes(words, poffs[g], length)
            _scatter_struct(cols, n, atype, fields, raw, rows[g], length)
            if atype == c.INET_DIAG_INFO and length >= 8:
                for name, off, shift, mask in L.TCP_INFO_BITFIELDS:
                    col = cols.get(name)
                    if col is None:
                        col = cols[name] = np.zeros(n, dtype=np.uint8)
                    col[rows[g]] = (raw[:, off] >> shift) & mask
    return cols


def _decode_cong(cols: Columns, n: int, words, rows, poffs, plens) -> None:
    data = np.zeros((n, L.CONG_NAME_MAX), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.uint8)
    enum = np.zeros(n, dtype=np.uint8)
    for length, g in _group_by_length(plens):
        if length <= 0:
            continue
        w = min(length, L.CONG_NAME_MAX)
        raw = _gather_bytes(words, poffs[g], length)[:, :w]
        r = rows[g]
        # the name ends at the first NUL (or the attribute end)
        nul = np.where((raw == 0).any(axis=1), (raw == 0).argmax(axis=1), w)
        data[r, :w] = raw
        lengths[r] = nul
        names, inverse = np.unique(raw, axis=0, return_inverse=True)
        values = np.array([L.CONGESTION_ENUM.get(bytes(nm).split(b"\0", 1)[0], 0) for nm in names], dtype=np.uint8)
        enum[r] = values[inverse.reshape(-1)]
    data[np.arange(L.CONG_NAME_MAX)[None, :] >= lengths[:, None]] = 0
    cols["congestion_algorithm_string"] = BytesColumn(data, lengths)
    cols["congestion_algorithm_enum"] = enum
