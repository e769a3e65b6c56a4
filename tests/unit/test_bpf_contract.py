"""The Python mirrors of the BPF records and enums match the objects' BTF member by
member (names, offsets, sizes), not only in total size.

Needs the built objects (`make -C bpf`) and libbpf; no root: BTF is parsed from the
object files, nothing is loaded into the kernel.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from xtcp2.ebpf import tcp_events as E
from xtcp2.ebpf import tcp_iter as T
from xtcp2.ebpf.btf_check import Btf, compare_enum, compare_struct, dtype_fields

BPF = Path(__file__).resolve().parents[2] / "bpf"


@pytest.fixture(scope="module")
def objects() -> dict[str, Path]:
    r = subprocess.run(["make", "-s", "-C", str(BPF)], capture_output=True, text=True)
    assert r.returncode == 0, f"make -C bpf failed: {r.stderr[-2000:]}"
    return {name: BPF / f"{name}.bpf.o" for name in ("tcp_events", "tcp_iter")}


def test_event_dtype_matches_btf(objects):
    with Btf.parse(objects["tcp_events"]) as btf:
        assert compare_struct(btf, "xtcp2_event", E.EVENT_DTYPE) == []


def test_iter_record_dtype_matches_btf(objects):
    with Btf.parse(objects["tcp_iter"]) as btf:
        assert compare_struct(btf, "xtcp2_iter_rec", T.ITER_DTYPE) == []


def test_enums_match_btf(objects):
    with Btf.parse(objects["tcp_events"]) as btf:
        assert compare_enum(btf, "xtcp2_stat", {f"XTCP2_STAT_{m.name}": m.value for m in E.Stat}) == []
    with Btf.parse(objects["tcp_iter"]) as btf:
        assert compare_enum(btf, "xtcp2_iter_kind", {"XTCP2_IT_FULL": T.KIND_FULL, "XTCP2_IT_TIMEWAIT": T.KIND_TIMEWAIT,
                                                     "XTCP2_IT_REQUEST": T.KIND_REQUEST}) == []
        assert compare_enum(btf, "xtcp2_iter_cc", {"XTCP2_CC_NONE": T.CC_NONE, "XTCP2_CC_BBR": T.CC_BBR,
                                                   "XTCP2_CC_DCTCP": T.CC_DCTCP, "XTCP2_CC_VEGAS": T.CC_VEGAS}) == []


def test_a_swapped_field_is_caught(objects):
    """Same size, two u32 members swapped: the size check at load would pass."""
    names = list(T.ITER_DTYPE.names)
    fields = [(n, T.ITER_DTYPE.fields[n][0]) for n in names]
    i, j = names.index("rqueue"), names.index("wqueue")
    fields[i], fields[j] = fields[j], fields[i]
    swapped = np.dtype(fields)
    assert swapped.itemsize == T.ITER_DTYPE.itemsize
    with Btf.parse(objects["tcp_iter"]) as btf:
        problems = compare_struct(btf, "xtcp2_iter_rec", swapped)
    assert len(problems) == 2 and all("queue" in p for p in problems)


def test_a_wrong_enum_value_is_caught(objects):
    with Btf.parse(objects["tcp_events"]) as btf:
        assert compare_enum(btf, "xtcp2_stat", {"XTCP2_STAT_RESERVE_FAILED": 0, "XTCP2_STAT_SUBMITTED": 2}) != []


def test_nested_tcp_info_is_flattened_the_same_way():
    flat = {name for name, _, _ in dtype_fields(E.EVENT_DTYPE)}
    nested = {name for name, _, _ in dtype_fields(T.ITER_DTYPE)}
    assert {"bytes_acked", "ca_name", "fastopen_client_fail"} <= flat & nested
