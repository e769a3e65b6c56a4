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


def _varint_lengths(v: np.ndarray, vmax: int) -> np.ndarray:
    size = np.ones(v.shape, dtype=np.uint8)
    k = 1
    while k < 10 and vmax >= (1 << (7 * k)):
        size += v >= np.uint64(1 << (7 * k))
        k += 1
    return size


class _Layout:
    """Collects slot runs: a (width, filler) per field, then materializes them."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.parts: list = []     # (width, fn(M_block, mask_block))
        self.row_size = np.zeros(n, dtype=np.int64)

    def constant(self, blob: bytes) -> None:
        if blob:
            arr = np.frombuffer(blob, dtype=np.uint8)

            def fill(M, K, arr=arr):
                M[:] = arr[:, None]
                K[:] = True
            self.parts.append((len(blob), fill))
            self.row_size += len(blob)

    def varints(self, tag: bytes, v: np.ndarray) -> None:
        v = v.astype(np.uint64, copy=False)
        vmax = int(v.max()) if len(v) else 0
        if vmax == 0:
            return
        nz = v != 0
        size = _varint_lengths(v, vmax)
        width = int(size.max())
        tl = len(tag)
        self.row_size += np.where(nz, tl + size, 0)

        def fill(M, K, v=v, nz=nz, size=size, tag=tag, width=width, tl=tl):
            for k, b in enumerate(tag):
                M[k] = b
                K[k] = nz
            rest = v.copy()
            for j in range(width):
                more = size > j + 1
                M[tl + j] = (rest & np.uint64(0x7F)).astype(np.uint8) | (more.astype(np.uint8) << 7)
                K[tl + j] = nz & (size > j)
                rest >>= np.uint64(7)
        self.parts.append((tl + width, fill))

    def bytes_(self, tag: bytes, col: BytesColumn) -> None:
        lengths = col.lengths.astype(np.int64)
        width = int(lengths.max()) if len(lengths) else 0
        if width == 0:
            return
        if width >= 128:
            raise ValueError("bytes columns longer than 127 bytes are not supported")
        nz = lengths > 0
        tl = len(tag)
        self.row_size += np.where(nz, tl + 1 + lengths, 0)

        def fill(M, K, col=col, nz=nz, lengths=lengths, tag=tag, tl=tl, width=width):
            for k, b in enumerate(tag):
                M[k] = b
                K[k] = nz
            M[tl] = lengths.astype(np.uint8)
            K[tl] = nz
            M[tl + 1:tl + 1 + width] = col.data[:, :width].T
            K[tl + 1:tl + 1 + width] = np.arange(width)[:, None] < lengths[None, :]
        self.parts.append((tl + 1 + width, fill))


def encode_rows(columns: Mapping[str, Any], n: int, constants: Mapping[str, Any] | None = None) -> tuple[bytes, np.ndarray]:
    """Serialize n records. Returns (Envelope body bytes, end offset of each row in it)."""
    constants = constants or {}
    unknown = (set(columns) | set(constants)) - FIELD_NAMES - {"_n"}
    if unknown:
        raise KeyError(f"not XtcpFlatRecord fields: {', '.join(sorted(unknown))}")
    lay = _Layout(n)
    pending = bytearray()
    for spec in FIELDS:
        if spec.name in constants:
            pending += encode_constant(spec.name, constants[spec.name])
            continue
        col = columns.get(spec.name)
        if col is None:
            continue
        if pending:
            lay.constant(bytes(pending))
            pending = bytearray()
        if isinstance(col, BytesColumn):
            lay.bytes_(spec.tag, col)
        else:
            lay.varints(spec.tag, np.asarray(col))
    if pending:
        lay.constant(bytes(pending))

    rs = lay.row_size
    hsize = _varint_lengths(rs.astype(np.uint64), int(rs.max()) if n else 0)
    hwidth = int(hsize.max()) if n else 1
    width = 1 + hwidth + sum(w for w, _ in lay.parts)
    # slot-major (one contiguous row per slot) so each filler writes whole rows
    M = np.empty((width, n), dtype=np.uint8)
    K = np.empty((width, n), dtype=bool)
    M[0] = ROW_TAG
    K[0] = True
    rest = rs.astype(np.uint64)
    for j in range(hwidth):
        M[1 + j] = (rest & np.uint64(0x7F)).astype(np.uint8) | ((hsize > j + 1).astype(np.uint8) << 7)
        K[1 + j] = hsize > j
        rest >>= np.uint64(7)
    pos = 1 + hwidth
    for w, fill in lay.parts:
        fill(M[pos:pos + w], K[pos:pos + w])
        pos += w
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
