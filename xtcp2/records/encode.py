"""Columnar protobuf encoder: Columns -> serialized Envelope bytes, no per-row Python.

Every record is laid out in a (rows x slots) byte matrix: one slot run per field, wide
enough for that field's longest value in this batch, preceded by the row's own header
(tag of Envelope.row + varint length). A parallel boolean mask marks the bytes that
exist (a zero field has none: proto3 does not serialize defaults). Reading the matrix
through the mask in row-major order yields exactly the bytes protobuf would write,
field by field in number order, row after row. Work is per field and per byte
position, each a numpy operation over all rows. Output is byte-identical to
Envelope.SerializeToString() (tests/unit/test_encode.py checks it).

Fields that are the same for every row (hostname, netns, timestamp of the dump...)
are passed as `constants`, encoded once and broadcast.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from google.protobuf.descriptor import FieldDescriptor as FD

from ..gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from ..netlink.decode import BytesColumn
from .envelope import EncodedEnvelope

ROW_TAG = 0x52  # Envelope.row: field 10, wire type 2
_VARINT_TYPES = {FD.TYPE_UINT32, FD.TYPE_UINT64, FD.TYPE_INT64, FD.TYPE_INT32, FD.TYPE_ENUM, FD.TYPE_BOOL}
_LEN_TYPES = {FD.TYPE_STRING, FD.TYPE_BYTES}


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


@dataclass(frozen=True)
class FieldSpec:
    name: str
    number: int
    tag: bytes
    varint: bool


def _field_specs() -> list[FieldSpec]:
    specs = []
    for f in sorted(pb.XtcpFlatRecord.DESCRIPTOR.fields, key=lambda f: f.number):
        if f.type in _VARINT_TYPES:
            specs.append(FieldSpec(f.name, f.number, varint(f.number << 3), True))
        elif f.type in _LEN_TYPES:
            specs.append(FieldSpec(f.name, f.number, varint(f.number << 3 | 2), False))
        else:
            raise TypeError(f"field {f.name}: type {f.type} not supported by the columnar encoder")
    return specs


FIELDS = _field_specs()
FIELD_NAMES = frozenset(f.name for f in FIELDS)
_SPEC = {f.name: f for f in FIELDS}


def encode_constant(name: str, value: Any) -> bytes:
    """Tag + value bytes of one field, b"" for a default (unset) value."""
    spec = _SPEC[name]
    if spec.varint:
        v = int(value)
        return spec.tag + varint(v) if v else b""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return spec.tag + varint(len(raw)) + raw if raw else b""


_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_SHIFTS = (np.arange(10, dtype=np.uint64) * np.uint64(7))[:, None]
_J = np.arange(11, dtype=np.uint8)[:, None]


def _varint_lengths(v: np.ndarray, vmax: int) -> np.ndarray:
    """Bytes each value takes as a varint (1..10)."""
    if vmax < 128:
        return np.ones(v.shape, dtype=np.uint8)
    return (np.searchsorted(_THRESHOLDS, v, side="right") + 1).astype(np.uint8)


def _varint_bytes(v: np.ndarray, size: np.ndarray, width: int) -> np.ndarray:
    """(width, n) varint bytes: 7 bits each, high bit set while more bytes follow."""
    out = ((v[None, :] >> _SHIFTS[:width]) & np.uint64(0x7F)).astype(np.uint8)
    out |= (size[None, :] > _J[1:width + 1]).view(np.uint8) << 7
    return out


def _plan(columns: Mapping[str, Any], constants: Mapping[str, Any]) -> list:
    """Fields in number order as ("const", blob) | ("var", tag, column) | ("bytes", tag, BytesColumn)."""
    unknown = (set(columns) | set(constants)) - FIELD_NAMES - {"_n"}
    if unknown:
        raise KeyError(f"not XtcpFlatRecord fields: {', '.join(sorted(unknown))}")
    items: list = []
    pending = bytearray()
    for spec in FIELDS:
        if spec.name in constants:
            pending += encode_constant(spec.name, constants[spec.name])
            continue
        col = columns.get(spec.name)
        if col is None:
            continue
        if pending:
            items.append(("const", bytes(pending)))
            pending = bytearray()
        items.append(("bytes" if isinstance(col, BytesColumn) else "var", spec.tag, col))
    if pending:
        items.append(("const", bytes(pending)))
    return items


def encode_rows(columns: Mapping[str, Any], n: int, constants: Mapping[str, Any] | None = None) -> tuple[bytes, np.ndarray]:
    """Serialize n records. Returns (Envelope body bytes, end offset of each row in it).

    All varint fields are handled together as one (fields x rows) matrix: lengths,
    presence and row sizes in a handful of 2D operations, and bytes written per
    group of fields of equal width, so the number of numpy calls does not grow with
    the number of fields.
    """
    items = _plan(columns, constants or {})
    # Varint fields: u64 columns in one matrix, narrower ones in a uint32 matrix (half
    # the memory traffic). Per field: its max decides its slot width; fields of equal
    # width are processed together.
    var_items = [it for it in items if it[0] == "var"]
    is64 = [np.asarray(it[2]).dtype.itemsize > 4 for it in var_items]
    mats = {}
    for wide in (False, True):
        idx = [i for i, w in enumerate(is64) if w == wide]
        mat = np.empty((len(idx), n), dtype=np.uint64 if wide else np.uint32)
        for r, i in enumerate(idx):
            mat[r] = var_items[i][2]
        mats[wide] = (idx, mat)
    field_of = {}   # var item index -> (wide, row in its matrix)
    vmax_of = {}
    for wide, (idx, mat) in mats.items():
        vm = mat.max(axis=1).tolist() if n and len(idx) else [0] * len(idx)
        for r, i in enumerate(idx):
            field_of[i] = (wide, r)
            vmax_of[i] = vm[r]
    live = [i for i in range(len(var_items)) if vmax_of[i] > 0]  # all-zero columns are not serialized
    keep = {id(var_items[i][2]) for i in live}
    items = [it for it in items if it[0] != "var" or id(it[2]) in keep]
    var_items = [var_items[i] for i in live]
    widths = [len(varint(vmax_of[i])) for i in live]
    loc = [field_of[i] for i in live]
    groups: dict[tuple[bool, int], list[int]] = {}   # (wide, width) -> live positions
    for k, (wide, _) in enumerate(loc):
        groups.setdefault((wide, widths[k]), []).append(k)
    rs = np.zeros(n, dtype=np.int64)
    group_data = {}
    for (wide, w), ks in groups.items():
        mat = mats[wide][1][[loc[k][1] for k in ks]]
        nzg = mat != 0
        sizeg = np.ones(mat.shape, dtype=np.uint8)
        for j in range(1, w):
            sizeg += (mat >= (1 << (7 * j))).view(np.uint8)
        tlg = np.array([len(var_items[k][1]) for k in ks], dtype=np.uint8)
        rs += ((sizeg + tlg[:, None]) * nzg).sum(axis=0, dtype=np.int64)
        group_data[(wide, w)] = (mat, nzg, sizeg)

    # slot layout: rows of M (slot-major) in field order
    consts, byte_cols = [], []
    tag_rows: dict = {}   # (wide, width) -> ([M row], [tag byte], [field in group])
    value_rows: dict = {}  # (wide, width) -> [M row]
    group_pos = {k: gi for ks in groups.values() for gi, k in enumerate(ks)}
    key_of = {k: g for g, ks in groups.items() for k in ks}
    pos = 0
    vi = 0
    for it in items:
        if it[0] == "const":
            consts.append((pos, it[1]))
            rs += len(it[1])
            pos += len(it[1])
        elif it[0] == "var":
            tag = it[1]
            g = key_of[vi]
            trows = tag_rows.setdefault(g, ([], [], []))
            for k, b in enumerate(tag):
                trows[0].append(pos + k)
                trows[1].append(b)
                trows[2].append(group_pos[vi])
            pos += len(tag)
            w = widths[vi]
            value_rows.setdefault(g, []).extend(range(pos, pos + w))
            pos += w
            vi += 1
        else:
            tag, col = it[1], it[2]
            lengths = col.lengths.astype(np.int64)
            bw = int(lengths.max()) if n else 0
            if bw == 0:
                continue
            if bw >= 128:
                raise ValueError("bytes columns longer than 127 bytes are not supported")
            byte_cols.append((pos, tag, col, lengths, bw))
            rs += np.where(lengths > 0, len(tag) + 1 + lengths, 0)
            pos += len(tag) + 1 + bw
    hsize = _varint_lengths(rs.astype(np.uint64), int(rs.max()) if n else 0)
    hwidth = int(hsize.max()) if n else 1
    head = 1 + hwidth
    M = np.empty((head + pos, n), dtype=np.uint8)
    K = np.empty((head + pos, n), dtype=bool)
    M[0] = ROW_TAG
    K[0] = True
    M[1:head] = _varint_bytes(rs.astype(np.uint64), hsize, hwidth)
    K[1:head] = hsize > _J[:hwidth]
    for g, (mat, nzg, sg) in group_data.items():
        trow, tval, tfield = tag_rows[g]
        rows = np.array(trow) + head
        M[rows] = np.array(tval, dtype=np.uint8)[:, None]
        K[rows] = nzg[tfield]
        w = g[1]
        rows = np.array(value_rows[g]) + head
        shifts = _SHIFTS[:w].astype(mat.dtype)
        M[rows] = (((mat[:, None, :] >> shifts) & mat.dtype.type(0x7F)).astype(np.uint8)
                   | ((sg[:, None, :] > _J[1:w + 1]).view(np.uint8) << 7)).reshape(-1, n)
        K[rows] = (nzg[:, None, :] & (sg[:, None, :] > _J[:w])).reshape(-1, n)
    for p, blob in consts:
        M[head + p:head + p + len(blob)] = np.frombuffer(blob, dtype=np.uint8)[:, None]
        K[head + p:head + p + len(blob)] = True
    for p, tag, col, lengths, bw in byte_cols:
        p += head
        present = lengths > 0
        tlen = len(tag)
        M[p:p + tlen] = np.frombuffer(tag, dtype=np.uint8)[:, None]
        K[p:p + tlen] = present
        M[p + tlen] = lengths.astype(np.uint8)
        K[p + tlen] = present
        M[p + tlen + 1:p + tlen + 1 + bw] = col.data[:, :bw].T
        K[p + tlen + 1:p + tlen + 1 + bw] = np.arange(bw)[:, None] < lengths[None, :]
    body = M.T[K.T].tobytes()
    row_ends = np.cumsum(1 + hsize.astype(np.int64) + rs)
    return body, row_ends


def encode_envelopes(columns: Mapping[str, Any], n: int, constants: Mapping[str, Any] | None = None,
                     max_rows: int = 10000, max_bytes: int = 768 * 1024) -> list[EncodedEnvelope]:
    """Encode n records and split them into Envelopes of at most max_rows / max_bytes.

    A single record larger than max_bytes still travels, alone in its envelope.
    """
    if n == 0:
        return []
    body, ends = encode_rows(columns, n, constants)
    out = []
    start_row, start_byte = 0, 0
    while start_row < n:
        limit = np.searchsorted(ends, start_byte + max_bytes, side="right")
        stop = max(start_row + 1, min(int(limit), start_row + max_rows, n))
        stop_byte = int(ends[stop - 1])
        out.append(EncodedEnvelope(body[start_byte:stop_byte], stop - start_row))
        start_row, start_byte = stop, stop_byte
    return out


def take_rows(columns: Mapping[str, Any], rows: np.ndarray) -> dict:
    """The subset `rows` of every column (for -modulus and filters)."""
    out = {k: (v.take(rows) if isinstance(v, BytesColumn) else v[rows]) for k, v in columns.items() if k != "_n"}
    out["_n"] = len(rows)
    return out
