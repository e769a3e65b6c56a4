"""Columnar protobuf encoder: Columns -> serialized Envelope bytes, no per-row Python.

Every record is laid out in a (slots x records) byte matrix: one slot run per field,
at least as wide as that field's longest value in this batch, preceded by the record's
own header (tag of Envelope.row + varint length). A parallel boolean mask marks the
bytes that exist (a zero field has none: proto3 does not serialize defaults; a short
value leaves the end of its slot unused). Reading the matrix through the mask record
by record yields exactly the bytes protobuf would write, field by field in number
order. Work is per block of fields and byte positions, each a numpy operation over all
records. Output is byte-identical to Envelope.SerializeToString()
(tests/unit/test_encode.py and test_encode_layout.py check it).

Which slot holds what depends only on the column set, the constants' lengths and the
slot widths, so it is computed once and cached: small batches, whose cost is mostly
this fixed part, use slots as wide as each field's type allows and so always find
their layout in the cache.

Fields that are the same for every row (hostname, netns, timestamp of the dump, uplink
NIC and switch, a batch's one container...) are passed as `constants` and encoded once.
Short ones are broadcast into the matrix. A long run of them between two columns
(SPLICE_MIN bytes or more; the uplink fields are ~420) is left out of the matrix and
copied into every record after the compaction, one memcpy per record, instead of
riding every matrix pass byte by byte (tests/unit/test_encode_splice.py).
"""
from __future__ import annotations

import functools
from typing import Any, Mapping, NamedTuple

import numpy as np

from ..gen.xtcp_flat_record.v1.fields import FIELDS as _PROTO_FIELDS
from ..columns import BytesColumn

ROW_TAG = 0x52  # Envelope.row: field 10, wire type 2


def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class FieldSpec(NamedTuple):
    name: str
    number: int
    tag: bytes
    varint: bool


def _field_specs() -> list[FieldSpec]:
    """From the generated field table (no protobuf runtime needed to encode)."""
    return [FieldSpec(name, number, varint(number << 3 | wire), wire == 0) for name, number, wire in _PROTO_FIELDS]


FIELDS = _field_specs()
FIELD_NAMES = frozenset(f.name for f in FIELDS)
_SPEC = {f.name: f for f in FIELDS}


def encode_constant(name: str, value: Any) -> bytes:
    """Tag + value bytes of one field, b"" for a default (unset) value."""
    return _encode_value(_SPEC[name], value)


def _encode_value(spec: FieldSpec, value: Any) -> bytes:
    """Tag + value bytes of one field, b"" for a default (unset) value."""
    if spec.varint:
        v = int(value)
        return spec.tag + varint(v) if v else b""
    raw = value.encode() if isinstance(value, str) else bytes(value)
    return spec.tag + varint(len(raw)) + raw if raw else b""


_THRESHOLDS = np.array([1 << (7 * k) for k in range(1, 10)], dtype=np.uint64)
_J = np.arange(11, dtype=np.uint8)[:, None]
# Shift amounts of the 7-bit groups, in each matrix dtype (a uint64 shift would promote
# a uint32 matrix to uint64 and double the memory traffic).
_SHIFTS = {np.dtype(dt): (np.arange(10, dtype=dt) * dt(7))[:, None] for dt in (np.uint32, np.uint64)}
_MAT_DTYPES = (np.dtype(np.uint32), np.dtype(np.uint64))
# Largest varint of each matrix class: the fixed slot widths of the small-batch layout.
_CLASS_WIDTH = (5, 10)
# Below this many rows the layout gives every varint field its class's widest slot:
# the layout then no longer depends on the data (one cached layout serves every batch)
# and all fields of a class are processed as one block. The unused bytes cost more
# than they save only for large batches, where fields are grouped by their own width.
SMALL_BATCH = 512
_ALWAYS = 255   # "row length" of constants: every byte of theirs is kept


def _varint_lengths(v: np.ndarray, vmax: int) -> np.ndarray:
    """Bytes each value takes as a varint (1..10)."""
    if vmax < 128:
        return np.ones(v.shape, dtype=np.uint8)
    return (np.searchsorted(_THRESHOLDS, v, side="right") + 1).astype(np.uint8)


def _varint_bytes(v: np.ndarray, size: np.ndarray, width: int) -> np.ndarray:
    """(width, n) varint bytes: 7 bits each, high bit set while more bytes follow."""
    out = ((v[None, :] >> _SHIFTS[v.dtype][:width]) & np.uint64(0x7F)).astype(np.uint8)
    out |= (size[None, :] > _J[1:width + 1]).view(np.uint8) << 7
    return out


class _Plan(NamedTuple):
    """What a set of column names/kinds and constant names encodes to, before any data.

    Varint columns are copied into two matrices, class 0 (uint32, for dtypes of up to
    4 bytes) and class 1 (uint64); var fields are numbered in matrix order, class 0
    first. `items` is the record's field order. Cached per signature: a caller's column
    set rarely changes.
    """
    var_pos: tuple[tuple[int, ...], tuple[int, ...]]  # per class: positions in columns.values()
    var_tags: tuple[bytes, ...]                      # per var field, class 0 then class 1
    var_class: tuple[int, ...]
    bytes_pos: tuple[int, ...]
    bytes_tags: tuple[bytes, ...]
    const_specs: tuple[FieldSpec, ...]               # field number order
    items: tuple[tuple[str, int], ...]               # ("var"|"bytes"|"const", index) in field order
    fixed_widths: tuple[int, ...]                    # small-batch slot width per var field
    normalise: bool                                  # some column is not an ndarray/BytesColumn


@functools.lru_cache(maxsize=64)
def _make_plan(names: tuple[str, ...], kinds: tuple, const_names: tuple[str, ...]) -> _Plan:
    unknown = (set(names) | set(const_names)) - FIELD_NAMES
    if unknown:
        raise KeyError(f"not XtcpFlatRecord fields: {', '.join(sorted(unknown))}")
    where = {name: (i, kind) for i, (name, kind) in enumerate(zip(names, kinds))}
    consts = set(const_names)
    var: list[list[tuple[int, bytes]]] = [[], []]
    byte_cols: list[tuple[int, bytes]] = []
    const_specs = []
    raw_items = []
    normalise = False
    for spec in FIELDS:
        if spec.name in consts:   # a constant wins over a column of the same name
            raw_items.append(("const", len(const_specs)))
            const_specs.append(spec)
            continue
        if spec.name not in where:
            continue
        pos, kind = where[spec.name]
        if isinstance(kind, int):   # ndarray, keyed by itemsize
            cls = int(kind > 4)
            raw_items.append(("var", (cls, len(var[cls]))))
            var[cls].append((pos, spec.tag))
        elif issubclass(kind, BytesColumn):
            raw_items.append(("bytes", len(byte_cols)))
            byte_cols.append((pos, spec.tag))
        else:
            normalise = True
    # var fields are numbered class 0 first, then class 1 (their order in the matrices)
    items = tuple((kind, idx[1] + (len(var[0]) if idx[0] else 0)) if kind == "var" else (kind, idx)
                  for kind, idx in raw_items)
    return _Plan(
        var_pos=(tuple(p for p, _ in var[0]), tuple(p for p, _ in var[1])),
        var_tags=tuple(t for _, t in var[0] + var[1]),
        var_class=(0,) * len(var[0]) + (1,) * len(var[1]),
        bytes_pos=tuple(p for p, _ in byte_cols),
        bytes_tags=tuple(t for _, t in byte_cols),
        const_specs=tuple(const_specs),
        items=items,
        fixed_widths=(_CLASS_WIDTH[0],) * len(var[0]) + (_CLASS_WIDTH[1],) * len(var[1]),
        normalise=normalise,
    )


class _Group(NamedTuple):
    """Varint fields of one matrix class sharing a slot width."""
    cls: int
    width: int
    select: np.ndarray | None   # rows of the class matrix; None = all of them, in order
    tag_len: np.ndarray         # (fields, 1) uint8
    e_rows: slice               # their rows in the per-item length matrix E
    value_rows: np.ndarray      # body rows of their value bytes, field-major


class _BytesSlot(NamedTuple):
    col: int          # index in plan.bytes_pos
    len_row: int      # body row of the length byte; the data bytes follow
    width: int


class _Splice(NamedTuple):
    """A run of constants left out of the byte matrix and copied into every record
    after compaction, between the bytes of the items before it and those after it
    (field order is kept)."""
    consts: tuple[int, ...]     # indices in plan.const_specs, field order
    length: int
    e_rows: np.ndarray          # rows of E whose bytes come before it in a record...
    fixed: int                  # ...plus this many bytes of matrix constants
    after: bool                 # e_rows/fixed count what comes after it instead (fewer rows to sum)


class _Layout(NamedTuple):
    """Body rows of the (slots x rows) byte matrix for one plan and set of slot widths.

    Every body row belongs to one item (a var field, a bytes column, or constants) and
    is kept for a record iff its offset in that item's run is below the item's encoded
    length in that record: E[row_item] holds those lengths (0 = field absent), so the
    whole keep-mask is one comparison. Constants in the matrix are rows of E set to
    _ALWAYS; long runs of constants are spliced in after compaction (`splices`).
    """
    groups: tuple[_Group, ...]
    byte_slots: tuple[_BytesSlot, ...]
    bytes_e: slice             # rows of E of all bytes columns (empty ones have no slot)
    bytes_run: np.ndarray      # (bytes columns, 1): tag + length byte
    e_height: int              # var fields, bytes columns, then the _ALWAYS row
    row_item: np.ndarray       # body row -> row of E
    row_offset: np.ndarray     # (rows, 1) body row -> offset in its item's run
    static_rows: np.ndarray    # tag bytes, then the matrix constants' bytes
    tag_bytes: bytes           # values of the tag rows; the constants' bytes follow per call
    inline: tuple[int, ...]    # constants in the matrix (indices in plan.const_specs)
    splices: tuple[_Splice, ...]


SPLICE_MIN = 64   # bytes: a shorter run costs less in the matrix than its splice


@functools.lru_cache(maxsize=64)
def _make_layout(plan: _Plan, widths: tuple[int, ...], bws: tuple[int, ...], clens: tuple[int, ...]) -> _Layout:
    """Layout for slot widths per var field (0 = absent), per bytes column and per constant."""
    by_group: dict[tuple[int, int], list[int]] = {}
    for f, w in enumerate(widths):
        if w:
            by_group.setdefault((plan.var_class[f], w), []).append(f)
    e_row_of: dict[int, int] = {}
    for fs in by_group.values():
        for f in fs:
            e_row_of[f] = len(e_row_of)
    n_var = len(e_row_of)
    always = n_var + len(bws)

    row_item: list[int] = []
    row_offset: list[int] = []
    tag_rows: list[int] = []
    tag_bytes = bytearray()
    const_rows: list[int] = []
    value_rows: dict[int, list[int]] = {}   # var field -> its value rows
    byte_slots = []
    inline: list[int] = []
    splices: list[tuple[tuple[int, ...], int, list[int], int]] = []
    before: list[int] = []   # E rows of the items placed so far
    fixed = 0                # bytes of matrix constants placed so far
    run_: list[int] = []     # constants since the last item that has bytes

    def run(item: int, length: int) -> int:
        start = len(row_item)
        row_item.extend([item] * length)
        row_offset.extend(range(length))
        return start

    def close_run() -> None:
        nonlocal fixed
        length = sum(clens[i] for i in run_)
        if length >= SPLICE_MIN:
            splices.append((tuple(run_), length, list(before), fixed))
        else:
            for i in run_:
                start = len(row_item)
                row_item.extend([always] * clens[i])
                row_offset.extend([0] * clens[i])
                const_rows.extend(range(start, start + clens[i]))
                inline.append(i)
                fixed += clens[i]
        run_.clear()

    for kind, i in plan.items:
        if kind == "var":
            if not widths[i]:
                continue
            close_run()
            tag = plan.var_tags[i]
            start = run(e_row_of[i], len(tag) + widths[i])
            tag_rows.extend(range(start, start + len(tag)))
            tag_bytes += tag
            value_rows[i] = list(range(start + len(tag), start + len(tag) + widths[i]))
            before.append(e_row_of[i])
        elif kind == "bytes":
            if not bws[i]:
                continue
            close_run()
            tag = plan.bytes_tags[i]
            start = run(n_var + i, len(tag) + 1 + bws[i])
            tag_rows.extend(range(start, start + len(tag)))
            tag_bytes += tag
            byte_slots.append(_BytesSlot(i, start + len(tag), bws[i]))
            before.append(n_var + i)
        elif clens[i]:
            run_.append(i)
    close_run()

    spl = []
    for consts, length, rows_before, fixed_before in splices:
        rows_after = before[len(rows_before):]
        after = len(rows_after) < len(rows_before)
        spl.append(_Splice(consts, length, np.array(rows_after if after else rows_before, dtype=np.intp),
                           fixed - fixed_before if after else fixed_before, after))

    groups = []
    n_class0 = plan.var_class.count(0)
    for (cls, w), fs in by_group.items():
        sel = [f - n_class0 if cls else f for f in fs]   # rows in the class matrix
        groups.append(_Group(
            cls, w,
            None if sel == list(range(plan.var_class.count(cls))) else np.array(sel, dtype=np.intp),
            np.array([len(plan.var_tags[f]) for f in fs], dtype=np.uint8)[:, None],
            slice(e_row_of[fs[0]], e_row_of[fs[0]] + len(fs)),
            np.array([r for f in fs for r in value_rows[f]], dtype=np.intp)))
    return _Layout(tuple(groups), tuple(byte_slots), slice(n_var, always),
                   np.array([len(t) + 1 for t in plan.bytes_tags], dtype=np.uint8)[:, None], always + 1,
                   np.array(row_item, dtype=np.intp), np.array(row_offset, dtype=np.uint8)[:, None],
                   np.array(tag_rows + const_rows, dtype=np.intp), bytes(tag_bytes), tuple(inline), tuple(spl))


def _windows(buf: np.ndarray, width: int, count: int) -> np.ndarray:
    """`count` overlapping width-byte items of buf, one starting at every byte: a
    fancy-indexed assignment through it copies a whole run per index (one memcpy)."""
    return np.ndarray((count,), dtype=f"V{width}", buffer=buf, offset=0, strides=(1,))


def _splice(stream: np.ndarray, cuts: np.ndarray, blocks: list[bytes], total: int) -> np.ndarray:
    """stream with blocks[j] inserted at its offsets cuts[:, j] (ascending in row-major
    order): `total` bytes.

    The stream is cut into pieces at the cuts; every piece and every block is moved by
    one fancy-indexed assignment through _windows(), one memcpy each whatever its
    length. Pieces are copied as windows of the longest piece's width, in ascending
    order (numpy assigns in index order), so the excess tail of each lands where a
    later piece or a block is written; the output has that width of slack, and the
    last pieces, whose window would read past the stream, are copied exactly."""
    n, m = cuts.shape
    s_len = len(stream)
    sizes = np.fromiter(map(len, blocks), np.int64, m)
    flat = cuts.reshape(-1)
    # a block lands at its cut, moved by every block before it
    before = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    dest = flat + (np.arange(n, dtype=np.int64)[:, None] * int(sizes.sum()) + before).reshape(-1)
    src = np.concatenate([[0], flat])
    dst = np.concatenate([[0], dest + np.tile(sizes, n)])
    lens = np.diff(np.append(src, s_len))
    width = max(int(lens.max()), 1)
    out = np.empty(total + width, dtype=np.uint8)
    k = int(np.searchsorted(src, s_len - width, side="right"))
    _windows(out, width, total + 1)[dst[:k]] = _windows(stream, width, s_len - width + 1)[src[:k]]
    for a, b, ln in zip(src[k:].tolist(), dst[k:].tolist(), lens[k:].tolist()):
        out[b:b + ln] = stream[a:a + ln]
    for j, blk in enumerate(blocks):
        _windows(out, len(blk), total - len(blk) + 1)[dest[j::m]] = np.frombuffer(blk, dtype=f"V{len(blk)}")[0]
    return out[:total]


def encode_rows(columns: Mapping[str, Any], n: int, constants: Mapping[str, Any] | None = None) -> tuple[bytes, np.ndarray]:
    """Serialize n records. Returns (Envelope body bytes, end offset of each row in it).

    The layout (which matrix row holds which byte of which field) is cached per column
    set and slot widths, so a call costs a fixed few dozen numpy operations plus work
    proportional to the data. Varint fields are processed in blocks of equal slot width
    (each a (fields x bytes x rows) array), so the number of numpy calls does not grow
    with the number of fields.
    """
    constants = constants or {}
    values = list(columns.values())
    # ndarrays are keyed by itemsize only: it alone picks the matrix they are copied into
    kinds = tuple([v.dtype.itemsize if type(v) is np.ndarray else type(v) for v in values])
    plan = _make_plan(tuple(columns), kinds, tuple(constants))
    if plan.normalise:   # lists, scalars, array subclasses: make them plain arrays and key again
        return encode_rows({k: v if type(v) is np.ndarray or isinstance(v, BytesColumn)
                            else np.broadcast_to(np.asarray(v), (n,)) for k, v in columns.items()}, n, constants)
    if n == 0:
        return b"", np.zeros(0, dtype=np.int64)

    blobs = [_encode_value(spec, constants[spec.name]) for spec in plan.const_specs]
    mats = tuple(np.array([values[p] for p in pos], dtype=dt).reshape(len(pos), n)
                 for pos, dt in zip(plan.var_pos, _MAT_DTYPES))
    if n < SMALL_BATCH:
        widths = plan.fixed_widths
    else:   # each field's width: varint length of its max, 0 (not serialized) if all zero
        w = []
        for mat in mats:
            if len(mat):
                vmax = mat.max(axis=1)
                w += np.where(vmax > 0, np.searchsorted(_THRESHOLDS, vmax, side="right") + 1, 0).tolist()
        widths = tuple(w)
    bcols = [values[p] for p in plan.bytes_pos]
    blens = np.array([c.lengths for c in bcols]).reshape(len(bcols), n)
    bws = tuple(blens.max(axis=1).tolist()) if bcols else ()
    for c, bw in zip(bcols, bws):
        if bw >= 128:
            raise ValueError("bytes columns longer than 127 bytes are not supported")
        if bw > c.data.shape[1] or len(c.lengths) != n:
            raise ValueError("bytes column lengths do not match its data")
    lay = _make_layout(plan, widths, bws, tuple(map(len, blobs)))

    # E: encoded length of every item in every record (0 = absent)
    E = np.empty((lay.e_height, n), dtype=np.uint8)
    vbytes = []
    for g in lay.groups:
        mat = mats[g.cls] if g.select is None else mats[g.cls][g.select]
        S = mat[:, None, :] >> _SHIFTS[mat.dtype][:g.width]   # 7-bit groups, low first
        nz = S != 0
        b = S.astype(np.uint8)   # low 8 bits, truncated
        b &= 0x7F
        b[:, :-1] |= nz[:, 1:].view(np.uint8) << 7   # continuation: a higher group is nonzero
        vbytes.append(b.reshape(-1, n))
        # bytes of a value = nonzero groups (a zero value has none), plus its tag
        e = nz.sum(axis=1, dtype=np.uint8)
        e += g.tag_len * nz[:, 0]
        E[g.e_rows] = e
    E[lay.bytes_e] = np.where(blens > 0, blens + lay.bytes_run, 0)
    const_len = sum(map(len, blobs))
    rs = E[:-1].sum(axis=0, dtype=np.int64) + const_len
    E[-1] = _ALWAYS

    rs64 = rs.astype(np.uint64)
    hsize = _varint_lengths(rs64, int(rs.max()))
    hwidth = int(hsize.max())
    head = 1 + hwidth
    rows = head + len(lay.row_item)
    M = np.empty((rows, n), dtype=np.uint8)
    K = np.empty((rows, n), dtype=bool)
    M[0] = ROW_TAG
    K[0] = True
    M[1:head] = _varint_bytes(rs64, hsize, hwidth)
    K[1:head] = hsize > _J[:hwidth]
    np.less(lay.row_offset, E[lay.row_item], out=K[head:])
    body = M[head:]
    body[lay.static_rows] = np.frombuffer(lay.tag_bytes + b"".join(blobs[i] for i in lay.inline),
                                          dtype=np.uint8)[:, None]
    for g, b in zip(lay.groups, vbytes):
        body[g.value_rows] = b
    for s in lay.byte_slots:
        col = bcols[s.col]
        body[s.len_row] = col.lengths
        body[s.len_row + 1:s.len_row + 1 + s.width] = col.data[:, :s.width].T
    stream = M.T[K.T]
    row_ends = np.cumsum(1 + hsize.astype(np.int64) + rs)
    if not lay.splices:
        return stream.tobytes(), row_ends

    # where each spliced run goes in the stream: after the record's header and the
    # items before it (or before the items after it, whichever are fewer to sum)
    spliced = sum(sp.length for sp in lay.splices)
    s_row_len = 1 + hsize.astype(np.int64) + rs - spliced
    starts = np.concatenate([[0], np.cumsum(s_row_len[:-1])])
    cuts = np.empty((n, len(lay.splices)), dtype=np.int64)
    for j, sp in enumerate(lay.splices):
        inside = E[sp.e_rows].sum(axis=0, dtype=np.int64) + sp.fixed
        cuts[:, j] = starts + (s_row_len - inside if sp.after else 1 + hsize + inside)
    blocks = [b"".join(blobs[i] for i in sp.consts) for sp in lay.splices]
    return _splice(stream, cuts, blocks, int(row_ends[-1])).tobytes(), row_ends
