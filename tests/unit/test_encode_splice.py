"""Long runs of constants are spliced into the rows after compaction, not carried
through the byte matrix; the rows must still be exactly what protobuf writes.

A run is what sits between two columns in field order: with uplink enrichment that is
~420 bytes (socket_fd ... uplink2_lldp_port_descr) between record_counter and pid, and
with one container per batch the container fields before label and tag. Each row is
checked twice against upb: byte for byte with SerializeToString, and parsed back by
upb into the same messages. Both slot layouts (fixed-width small batches, exact-width
large ones) are run; columns between the runs are zero in some rows, so some pieces
between two runs are empty.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from xtcp2.columns import BytesColumn
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.records import encode
from xtcp2.records.encode import encode_rows

from .test_encode import batches, props, reference_records
from .test_encode_layout import MODES, layout_mode

UPLINK = {}
for _slot, (_ifname, _bus, _port) in enumerate((("ens1f0np0", "0000:3b:00.0", "Ethernet12"),
                                                ("ens1f1np1", "0000:3b:00.1", "Ethernet13")), 1):
    UPLINK.update({
        f"uplink{_slot}_ifname": _ifname, f"uplink{_slot}_nic_driver": "mlx5_core",
        f"uplink{_slot}_nic_model": "MT2892 Family [ConnectX-6 Dx]", f"uplink{_slot}_nic_pci_vendor": 0x15B3,
        f"uplink{_slot}_nic_pci_device": 0x101D, f"uplink{_slot}_nic_bus_info": _bus,
        f"uplink{_slot}_nic_speed_mbps": 100000, f"uplink{_slot}_nic_fw_version": "22.36.1010 (MT_0000000359)",
        f"uplink{_slot}_lldp_chassis_name": f"leaf-r04-{_slot}.dc1.example.net",
        f"uplink{_slot}_lldp_chassis_id": f"0c:42:a1:5e:77:0{_slot}", f"uplink{_slot}_lldp_mgmt_ip": f"10.0.4.{_slot}",
        f"uplink{_slot}_lldp_port_id": _port, f"uplink{_slot}_lldp_port_descr": f"to r04-host07 port {_slot}",
    })
CONTAINER = {"container_id": "4f" * 32, "container_runtime": "docker", "container_name": "web-frontend-7d9f",
             "container_image": "registry.example.net/team/web-frontend:2026.12.1"}
POLL = {"schema_version": 1, "daemon_version": "0.1.0", "timestamp_ns": 1_796_565_295_238_080_352,
        "hostname": "node-17.dc1.example.net", "netns": "default", "netns_inode": 4026531840,
        "socket_fd": 12, "netlinker_id": 3, "trigger": 1}


def _bytes_column(values: list[bytes], width: int = 16) -> BytesColumn:
    data = np.zeros((len(values), width), dtype=np.uint8)
    for i, v in enumerate(values):
        data[i, :len(v)] = np.frombuffer(v, dtype=np.uint8)
    return BytesColumn(data, np.array([len(v) for v in values], dtype=np.uint8))


def poll_columns(n: int, seed: int = 7) -> dict:
    """A poll chunk's shape: record_counter before the uplink run, pid/comm after it,
    socket columns after those; record_counter and pid are 0 in some rows."""
    rng = np.random.default_rng(seed)
    counter = np.arange(1, n + 1, dtype=np.uint64)
    counter[rng.random(n) < 0.2] = 0
    pid = rng.integers(1, 4_000_000, n).astype(np.uint32)
    pid[rng.random(n) < 0.3] = 0
    return {
        "record_counter": counter,
        "pid": pid,
        "comm": _bytes_column([b"" if p == 0 else b"python3" for p in pid]),
        "inet_diag_msg_family": np.where(rng.random(n) < 0.5, 2, 10).astype(np.uint8),
        "inet_diag_msg_socket_cookie": rng.integers(1, 2**63, n, dtype=np.uint64),
        "inet_diag_msg_socket_source": _bytes_column([bytes(rng.integers(0, 256, 4 + 12 * (i % 2), dtype=np.uint8))
                                                      for i in range(n)]),
        "tcp_info_rtt": (rng.integers(0, 2**20, n) * (rng.random(n) < 0.8)).astype(np.uint32),
        "tcp_info_bytes_acked": rng.integers(0, 2**40, n, dtype=np.uint64),
    }


def check(columns: dict, n: int, constants: dict) -> None:
    body, ends = encode_rows(columns, n, constants)
    records = reference_records(columns, n, constants)
    assert body == pb.Envelope(row=records).SerializeToString()
    assert ends.tolist() == np.cumsum([len(pb.Envelope(row=[r]).SerializeToString()) for r in records]).tolist()
    # and upb reads the spliced rows back as the same records
    assert list(pb.Envelope.FromString(body).row) == records


def splices_of(columns: dict, n: int, constants: dict) -> tuple:
    """The splices the layout of this call uses (what the encoder decided, read back)."""
    seen = []
    real = encode._make_layout

    def spy(*args):
        lay = real(*args)
        seen.append(lay)
        return lay
    encode._make_layout = spy
    try:
        encode_rows(columns, n, constants)
    finally:
        encode._make_layout = real
    return seen[-1].splices


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("consts", [dict(POLL, **UPLINK), dict(POLL, **CONTAINER), dict(POLL, **UPLINK, **CONTAINER),
                                    {k: v for k, v in dict(POLL, **UPLINK).items() if "_lldp_" not in k}],
                         ids=["uplink", "container", "both", "nic-only"])
def test_poll_rows_with_long_constants_match_upb(mode: str, consts: dict):
    n = 700
    cols = poll_columns(n)
    with layout_mode(mode):
        assert splices_of(cols, n, consts), "a run of this length is spliced"
        check(cols, n, consts)


def test_short_runs_stay_in_the_matrix_and_long_ones_are_spliced():
    n = 50
    cols = poll_columns(n)
    assert not splices_of(cols, n, {"trigger": 1, "netlinker_id": 2, "hostname": "h"})
    runs = splices_of(cols, n, dict(POLL, **UPLINK))
    uplink_bytes = sum(len(encode.encode_constant(k, v)) for k, v in UPLINK.items())
    # the uplink fields and socket_fd..trigger before them form one run, after record_counter
    assert any(sp.length >= uplink_bytes for sp in runs)


@pytest.mark.parametrize("mode", list(MODES))
def test_columns_that_are_zero_in_every_row_join_two_runs(mode: str):
    """record_counter all zero: it has no slot, and the runs around it are one."""
    n = 600
    cols = poll_columns(n)
    cols["record_counter"] = np.zeros(n, dtype=np.uint64)
    with layout_mode(mode):
        check(cols, n, dict(POLL, **UPLINK, **CONTAINER))


@props(0.5)
@given(batches(max_rows=40), st.data())
def test_random_batches_with_long_constants(batch, data):
    columns, n, constants = batch
    # long strings and varints at random field positions, between the batch's columns
    names = data.draw(st.lists(st.sampled_from(sorted(UPLINK) + sorted(CONTAINER) + ["hostname", "label", "tag"]),
                               max_size=12, unique=True))
    for name in names:
        if name in columns:
            continue
        value = UPLINK.get(name, CONTAINER.get(name, "x"))
        constants[name] = value if not isinstance(value, str) else value * data.draw(st.integers(1, 4))
    for mode in MODES:
        with layout_mode(mode):
            check(columns, n, constants)
