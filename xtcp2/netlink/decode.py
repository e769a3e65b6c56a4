"""Columnar decoder: many inet_diag messages at once into per-field numpy columns.

No Python work per socket or per field: the rtattr chains of all messages are walked
in lockstep (one numpy step per attribute position, ~12 steps per chunk), and every
struct is gathered for all sockets that carry it with one fancy index, then split into
fields by a structured dtype view. Every read is bounded by the length the kernel
wrote: nlmsg_len for the message and rta_len for each attribute.

Output: `Columns` (xtcp2.columns), keyed by XtcpFlatRecord field names, with the row
count in `.n`. Scalars are numpy arrays of length n (0 = unset); addresses and strings
are BytesColumn.
"""
from __future__ import annotations

import numpy as np
from ..prom_light import Counter

from ..columns import BytesColumn, Columns, unique
from . import constants as c
from . import layouts as L


DECODE_ERRORS = Counter(
    "xtcp2_decode_errors_total", "Malformed messages or attributes skipped by the decoder", ["what"]
)

# Pseudo-fields: the raw address bytes and the two tcp_info bitfield bytes.
_MSG_FIELDS = L.INET_DIAG_MSG + [("_src", L.SRC_OFFSET, "(16,)u1"), ("_dst", L.DST_OFFSET, "(16,)u1")]
_TCP_INFO_FIELDS = L.TCP_INFO + [("_b6", 6, "u1"), ("_b7", 7, "u1")]


_DTYPES: dict = {}


def _struct_dtype(key, fields, length: int) -> np.dtype:
    """Structured dtype over ceil(length/4) words holding the fields that fit in length."""
    dt = _DTYPES.get((key, length))
    if dt is None:
        names, formats, offsets = [], [], []
        for name, off, fmt in fields:
            size = np.dtype(fmt).itemsize
            if off + size <= length:
                names.append(name)
                formats.append(fmt)
                offsets.append(off)
        itemsize = ((length + 3) >> 2) << 2
        dt = _DTYPES[(key, length)] = np.dtype({"names": names, "formats": formats, "offsets": offsets,
                                                "itemsize": itemsize})
    return dt


def _gather_structs(words: np.ndarray, word_index: np.ndarray, key, fields, length: int) -> np.ndarray:
    """Copies of the structs starting at word_index, as a structured array.

    Rows are gathered from a sliding-window view of the buffer (one contiguous copy
    per struct, no index matrix) and only ceil(length / 4) words are read: the
    attribute is 4-padded inside its message, so this never crosses into the next one.
    """
    dt = _struct_dtype(key, fields, length)
    nw = dt.itemsize >> 2
    rows = np.lib.stride_tricks.sliding_window_view(words, nw)[word_index]
    return rows.view(dt).reshape(-1)


def _is_all_rows(rows, n: int) -> bool:
    return isinstance(rows, slice) or (len(rows) == n and rows[0] == 0 and rows[-1] == n - 1
                                       and bool((np.diff(rows) == 1).all()))


def _scatter_fields(cols: Columns, n: int, rec: np.ndarray, rows, skip=()) -> None:
    """One column per field of `rec`, filled at `rows` (0 = unset elsewhere)."""
    whole = _is_all_rows(rows, n)
    for name in rec.dtype.names:
        if name in skip:
            continue
        vals = rec[name]
        col = cols.get(name)
        if whole and col is None:
            cols[name] = vals
            continue
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
    for ln in np.flatnonzero(np.bincount(lengths)):  # attribute lengths: small integers
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
        return Columns(0)
    nlen = words[offs >> 2].astype(np.int64)
    ok = (nlen >= c.NLMSG_HDRLEN + c.INET_DIAG_MSG_LEN) & (offs + nlen <= used) & ((offs & 3) == 0)
    if not ok.all():
        DECODE_ERRORS.labels("inet_diag_msg").inc(int((~ok).sum()))
        offs, nlen = offs[ok], nlen[ok]
    n = len(offs)
    cols = Columns(n)
    if n == 0:
        return cols

    # struct inet_diag_msg
    body = offs + c.NLMSG_HDRLEN
    msg = _gather_structs(words, body >> 2, "msg", _MSG_FIELDS, c.INET_DIAG_MSG_LEN)
    _scatter_fields(cols, n, msg, slice(None), skip=("_src", "_dst"))
    fam = cols["inet_diag_msg_family"]
    addr_len = np.where(fam == c.AF_INET6, 16, 4).astype(np.uint8)
    # copies (the gathered structs), never views into the reused receive buffer
    cols["inet_diag_msg_socket_source"] = BytesColumn(msg["_src"], addr_len)
    cols["inet_diag_msg_socket_destination"] = BytesColumn(msg["_dst"], addr_len)

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
        DECODE_ERRORS.labels("rtattr").inc(bad_attrs)
    if not a_rows:
        return cols
    a_rows = np.concatenate(a_rows)
    a_types = np.concatenate(a_types)
    a_offs = np.concatenate(a_offs)
    a_lens = np.concatenate(a_lens)

    for atype in np.flatnonzero(np.bincount(a_types)).tolist():  # attribute types: small integers
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
            if atype == c.INET_DIAG_INFO:
                rec = _gather_structs(words, poffs[g] >> 2, atype, _TCP_INFO_FIELDS, length)
                _scatter_fields(cols, n, rec, rows[g], skip=("_b6", "_b7"))
                if length >= 8:
                    whole = _is_all_rows(rows[g], n)
                    for name, off, shift, mask in L.TCP_INFO_BITFIELDS:
                        vals = (rec["_b6" if off == 6 else "_b7"] >> shift) & mask
                        if whole and name not in cols:
                            cols[name] = vals
                            continue
                        col = cols.get(name)
                        if col is None:
                            col = cols[name] = np.zeros(n, dtype=np.uint8)
                        col[rows[g]] = vals
            else:
                _scatter_fields(cols, n, _gather_structs(words, poffs[g] >> 2, atype, fields, length), rows[g])
    return cols


def _gather_bytes(words: np.ndarray, byte_offsets: np.ndarray, nbytes: int) -> np.ndarray:
    """(k, ceil(nbytes/4)*4) uint8 copy of the 4-aligned byte runs at byte_offsets."""
    nw = (nbytes + 3) >> 2
    idx = (byte_offsets >> 2)[:, None] + np.arange(nw, dtype=np.int64)
    return words[idx].view(np.uint8).reshape(len(byte_offsets), nw * 4)


def _decode_cong(cols: Columns, n: int, words, rows, poffs, plens) -> None:
    data = np.zeros((n, L.CONG_NAME_MAX), dtype=np.uint8)
    lengths = np.zeros(n, dtype=np.uint8)
    enum = np.zeros(n, dtype=np.uint8)
    for length, g in _group_by_length(plens):
        if length <= 0:
            continue
        w = min(length, L.CONG_NAME_MAX)
        raw = _gather_bytes(words, poffs[g], w)[:, :w]
        raw = np.where(np.arange(w)[None, :] < np.minimum(length, w), raw, 0).astype(np.uint8)
        r = rows[g]
        zero = raw == 0
        nul = np.where(zero.any(axis=1), zero.argmax(axis=1), w)  # the name ends at the first NUL
        raw[np.arange(w)[None, :] >= nul[:, None]] = 0
        data[r, :w] = raw
        lengths[r] = nul
        # few distinct names: hash rows to one u64 key, then map each distinct key
        padded = np.zeros((len(raw), 16), dtype=np.uint8)
        padded[:, :w] = raw
        halves = padded.view(np.uint64)
        key = halves[:, 0] ^ (halves[:, 1] * np.uint64(0x9E3779B97F4A7C15))
        for k in unique(key):
            m = key == k
            name = bytes(padded[int(np.argmax(m))]).split(b"\0", 1)[0]
            enum[r[m] if not isinstance(r, slice) else np.flatnonzero(m)] = L.CONGESTION_ENUM.get(name, 0)
    cols["congestion_algorithm_string"] = BytesColumn(data, lengths)
    cols["congestion_algorithm_enum"] = enum
