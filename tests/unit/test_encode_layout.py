"""encode_rows caches its plan and byte layout; the cache must never change the output.

Both layouts are checked against protobuf's own SerializeToString: the fixed-width one
of small batches (every varint field gets its type's widest slot, one layout per column
set) and the exact-width one of large batches (slots as wide as this batch's values,
keyed by the widths). SMALL_BATCH is patched so that both run on the same small inputs.
"""
from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest
from hypothesis import given

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.columns import BytesColumn
from xtcp2.records import encode
from xtcp2.records.encode import encode_rows

from .test_encode import batches, props, reference_records

MODES = {"fixed": 10**9, "exact": 0}


@contextlib.contextmanager
def layout_mode(mode: str) -> Iterator[None]:
    saved = encode.SMALL_BATCH
    encode.SMALL_BATCH = MODES[mode]
    try:
        yield
    finally:
        encode.SMALL_BATCH = saved


def check(columns: dict, n: int, constants: dict) -> None:
    body, ends = encode_rows(columns, n, constants)
    records = reference_records(columns, n, constants)
    assert body == pb.Envelope(row=records).SerializeToString()
    assert ends.tolist() == np.cumsum([len(pb.Envelope(row=[r]).SerializeToString()) for r in records]).tolist()


@props()
@given(batches())
def test_both_layouts_match_serialize_to_string(batch):
    for mode in MODES:
        with layout_mode(mode):
            check(*batch)


def bytes_column(values: list[bytes]) -> BytesColumn:
    data = np.zeros((len(values), 16), dtype=np.uint8)
    for i, v in enumerate(values):
        data[i, :len(v)] = np.frombuffer(v, dtype=np.uint8)
    return BytesColumn(data, np.array([len(v) for v in values], dtype=np.uint8))


@pytest.mark.parametrize("mode", list(MODES))
def test_same_columns_with_changing_widths(mode: str):
    """One column set, called again and again while every width that shapes the layout
    changes: a varint column from all zero to 10 bytes and back, a bytes column from
    empty to 4 to 16 bytes, constants changing length or becoming the default."""
    n = 7
    rng = np.random.default_rng(3)
    scales = [0, 1, 127, 128, 2**14, 2**32 - 1, 0, 300]
    with layout_mode(mode):
        for k, scale in enumerate(scales):
            big = np.uint64(scale) if k % 2 else np.uint64(2**64 - 1 - k)
            columns = {
                "tcp_info_rtt": (rng.integers(0, scale + 1, n, dtype=np.uint64)).astype(np.uint32),
                "tcp_info_bytes_acked": np.where(rng.random(n) < 0.5, big, np.uint64(0)),
                # longest address: 16, 4, 0 bytes; longest name: 0, 5, 5 bytes
                "inet_diag_msg_socket_source": bytes_column(([b"", b"\x01\x02\x03\x04", b"\xff" * 16][:3 - k % 3] * n)[:n]),
                "congestion_algorithm_string": bytes_column(([b"", b"cubic", b"bbr"][:k % 3 + 1] * n)[:n]),
                "tcp_info_state": np.full(n, k % 2 * 7, dtype=np.uint8),
            }
            constants = {"hostname": "h" * (k * 40), "timestamp_ns": 1 << (8 * k), "netns": "x" if k % 3 else "",
                         "trigger": k % 2}
            check(columns, n, constants)


def test_caches_stay_bounded():
    """Many column sets and many layouts: the caches keep at most their limit."""
    rng = np.random.default_rng(5)
    names = [f.name for f in encode.FIELDS if f.varint][:40]
    for k in range(150):
        n = 3
        columns = {name: rng.integers(0, 1000, n).astype(np.uint32) for name in names[k % 40:k % 40 + 1 + k % 7]}
        constants = {"hostname": "x" * k}
        check(columns, n, constants)
    with layout_mode("exact"):
        for k in range(100):
            columns = {"tcp_info_rtt": np.array([1 << (k % 32), 0], dtype=np.uint32),
                       "tcp_info_bytes_acked": np.array([1 << (k % 64), 3], dtype=np.uint64)}
            check(columns, 2, {"hostname": "y" * k})
    assert encode._make_plan.cache_info().currsize <= encode._make_plan.cache_info().maxsize == 64
    assert encode._make_layout.cache_info().currsize <= encode._make_layout.cache_info().maxsize == 64


def test_inputs_that_are_not_arrays_and_bad_lengths():
    n = 3
    reference, _ = encode_rows({"tcp_info_rtt": np.array([1, 0, 300], dtype=np.uint32)}, n)
    assert encode_rows({"tcp_info_rtt": [1, 0, 300]}, n)[0] == reference
    assert encode_rows({"tcp_info_rtt": np.array([1, 0, 300], dtype=np.uint32).view(np.recarray)}, n)[0] == reference
    assert encode_rows({"tcp_info_rtt": 300}, n)[0] == encode_rows({"tcp_info_rtt": np.full(n, 300)}, n)[0]
    body, ends = encode_rows({"tcp_info_rtt": np.zeros(0, dtype=np.uint32)}, 0, {"hostname": "h"})
    assert body == b"" and len(ends) == 0
    with pytest.raises(ValueError):
        encode_rows({"tcp_info_rtt": np.array([1, 2], dtype=np.uint32)}, n)
    with pytest.raises(ValueError):
        encode_rows({"tcp_info_rtt": [1, 2]}, n)
    with pytest.raises(ValueError):
        encode_rows({"inet_diag_msg_socket_source": bytes_column([b"ab"] * 2)}, n)
    with pytest.raises(KeyError):
        encode_rows({"no_such_field": np.zeros(n, dtype=np.uint32)}, n)
