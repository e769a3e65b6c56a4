"""Check the Python mirrors of the BPF contract against the object's own BTF.

Each BPF object carries, in its .BTF section, the layout clang gave every struct and
enum it uses. The numpy dtypes that read those records (events.EVENT_DTYPE,
tcp_iter.ITER_DTYPE) and the Python enums must agree with it member by member: same
names, offsets and sizes. A size check alone misses two swapped u32 fields.

Read through libbpf's BTF API (btf__parse), no bpftool needed. Also used by the
loaders to read a .rodata constant by name instead of assuming its offset.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from ..errors import Xtcp2Error
from . import libbpf

KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 8, 9, 10, 11
KIND_VAR, KIND_DATASEC, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class _Type(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("info", ctypes.c_uint32), ("size_or_type", ctypes.c_uint32)]


class _Member(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("type", ctypes.c_uint32), ("offset", ctypes.c_uint32)]


class _Array(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("index_type", ctypes.c_uint32), ("nelems", ctypes.c_uint32)]


class _Enum(ctypes.Structure):
    _fields_ = [("name_off", ctypes.c_uint32), ("val", ctypes.c_int32)]


class _VarSecinfo(ctypes.Structure):
    _fields_ = [("type", ctypes.c_uint32), ("offset", ctypes.c_uint32), ("size", ctypes.c_uint32)]


_bound = False


def _lib():
    global _bound
    lib = libbpf.load()
    if not _bound:
        P, S = ctypes.c_void_p, ctypes.c_char_p
        for name, res, args in (
            ("btf__parse", P, [S, P]),
            ("btf__free", None, [P]),
            ("btf__find_by_name_kind", ctypes.c_int32, [P, S, ctypes.c_uint32]),
            ("btf__type_by_id", P, [P, ctypes.c_uint32]),
            ("btf__name_by_offset", S, [P, ctypes.c_uint32]),
            ("btf__resolve_size", ctypes.c_int64, [P, ctypes.c_uint32]),
            ("bpf_object__btf", P, [P]),
        ):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        _bound = True
    return lib


class Btf:
    """The BTF of one BPF object file (or of an open bpf_object, borrowed)."""

    def __init__(self, handle: int, owned: bool) -> None:
        self._h = handle
        self._owned = owned
        self._lib = _lib()

    @classmethod
    def parse(cls, path: Path) -> "Btf":
        h = _lib().btf__parse(str(path).encode(), None)
        if not h or _lib().libbpf_get_error(h):
            raise Xtcp2Error(f"{path}: no BTF (build with clang -g)")
        return cls(h, True)

    @classmethod
    def of_object(cls, obj: int) -> "Btf | None":
        h = _lib().bpf_object__btf(obj)
        return cls(h, False) if h else None

    def close(self) -> None:
        if self._owned and self._h:
            self._lib.btf__free(self._h)
        self._h = 0

    def __enter__(self) -> "Btf":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- raw access ---------------------------------------------------------------
    def _type(self, tid: int) -> tuple[_Type, int]:
        p = self._lib.btf__type_by_id(self._h, tid)
        if not p:
            raise Xtcp2Error(f"BTF type id {tid} not found")
        return _Type.from_address(p), p

    def _name(self, off: int) -> str:
        s = self._lib.btf__name_by_offset(self._h, off)
        return s.decode() if s else ""

    @staticmethod
    def _kind(t: _Type) -> int:
        return (t.info >> 24) & 0x1F

    def _find(self, name: str, kind: int) -> int:
        tid = self._lib.btf__find_by_name_kind(self._h, name.encode(), kind)
        if tid <= 0:
            raise Xtcp2Error(f"BTF has no {'struct' if kind == KIND_STRUCT else 'enum'} {name}")
        return tid

    def _strip(self, tid: int) -> tuple[int, _Type, int]:
        while True:
            t, p = self._type(tid)
            if self._kind(t) not in _MODIFIERS:
                return tid, t, p
            tid = t.size_or_type

    # -- what the checks need -----------------------------------------------------
    def struct_fields(self, name: str) -> list[tuple[str, int, int]]:
        """(leaf member name, byte offset, byte size) of a struct, nested structs flattened."""
        return self._flatten(self._find(name, KIND_STRUCT), 0)

    def _flatten(self, tid: int, base: int) -> list[tuple[str, int, int]]:
        _, t, p = self._strip(tid)
        out = []
        kflag = t.info >> 31
        for i in range(t.info & 0xFFFF):
            m = _Member.from_address(p + ctypes.sizeof(_Type) + i * ctypes.sizeof(_Member))
            bit = m.offset & 0xFFFFFF if kflag else m.offset
            if bit % 8:
                raise Xtcp2Error(f"bitfield member {self._name(m.name_off)} in a record layout")
            off = base + bit // 8
            mtid, mt, _ = self._strip(m.type)
            if self._kind(mt) in (KIND_STRUCT, KIND_UNION):
                out.extend(self._flatten(mtid, off))
            else:
                out.append((self._name(m.name_off), off, int(self._lib.btf__resolve_size(self._h, mtid))))
        return out

    def struct_size(self, name: str) -> int:
        return int(self._lib.btf__resolve_size(self._h, self._find(name, KIND_STRUCT)))

    def enum_values(self, name: str) -> dict[str, int]:
        _, t, p = self._strip(self._find(name, KIND_ENUM))
        return {self._name(e.name_off): e.val for e in
                (_Enum.from_address(p + ctypes.sizeof(_Type) + i * ctypes.sizeof(_Enum))
                 for i in range(t.info & 0xFFFF))}

    def datasec_offset(self, section: str, var: str) -> int:
        """Byte offset of a global variable inside a data section (.rodata)."""
        _, t, p = self._strip(self._find(section, KIND_DATASEC))
        for i in range(t.info & 0xFFFF):
            s = _VarSecinfo.from_address(p + ctypes.sizeof(_Type) + i * ctypes.sizeof(_VarSecinfo))
            vt, _ = self._type(s.type)
            if self._name(vt.name_off) == var:
                return s.offset
        raise Xtcp2Error(f"BTF section {section} has no variable {var}")


def dtype_fields(dt: np.dtype, base: int = 0) -> list[tuple[str, int, int]]:
    """(leaf field name, byte offset, byte size) of a numpy record dtype, nested flattened."""
    out = []
    for name in dt.names:
        sub, off = dt.fields[name][:2]
        if sub.names is not None:
            out.extend(dtype_fields(sub, base + off))
        else:
            out.append((name, base + off, sub.itemsize))
    return out


def compare_struct(btf: Btf, struct: str, dt: np.dtype) -> list[str]:
    """Differences between a C struct (from BTF) and its numpy mirror; [] if equal."""
    c_fields = btf.struct_fields(struct)
    py_fields = dtype_fields(dt)
    problems = []
    if btf.struct_size(struct) != dt.itemsize:
        problems.append(f"struct {struct}: {btf.struct_size(struct)} bytes, numpy dtype {dt.itemsize}")
    c_by_off = {off: (name, size) for name, off, size in c_fields}
    py_by_off = {off: (name, size) for name, off, size in py_fields}
    for off in sorted(set(c_by_off) | set(py_by_off)):
        c, py = c_by_off.get(off), py_by_off.get(off)
        if c != py:
            problems.append(f"struct {struct} offset {off}: C {c}, numpy {py}")
    return problems


def compare_enum(btf: Btf, enum: str, values: dict[str, int]) -> list[str]:
    """Differences between a C enum and {NAME: value}; names in the C enum that are
    missing from `values` count too (except a trailing *_MAX)."""
    c_vals = btf.enum_values(enum)
    problems = [f"enum {enum}: {k} C {c_vals.get(k)} Python {v}" for k, v in values.items() if c_vals.get(k) != v]
    problems += [f"enum {enum}: {k} has no Python mirror" for k in c_vals
                 if k not in values and not k.endswith("_MAX")]
    return problems


def rodata_u32(obj: int, var: str) -> int | None:
    """The initial value of a `const volatile __u32` in an open (not yet loaded)
    object's .rodata, found by name through BTF; None if the object has none."""
    lib = libbpf.load()
    ro = lib.bpf_object__find_map_by_name(obj, b".rodata")
    btf = Btf.of_object(obj)
    if not ro or btf is None:
        return None
    off = btf.datasec_offset(".rodata", var)
    sz = ctypes.c_size_t()
    p = lib.bpf_map__initial_value(ro, ctypes.byref(sz))
    if not p or off + 4 > sz.value:
        return None
    return ctypes.c_uint32.from_address(p + off).value
