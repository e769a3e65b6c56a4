"""-marshal msgpack on a live poll: unpacked with the msgpack library, equal to the
protobuf Envelope of the very same records (the daemon's listener sees those)."""
from __future__ import annotations

import ipaddress

import msgpack
import pytest

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb

pytestmark = pytest.mark.root
DESC = pb.XtcpFlatRecord.DESCRIPTOR
ADDRESSES = {"inet_diag_msg_socket_source", "inet_diag_msg_socket_destination"}


def expected_map(row: pb.XtcpFlatRecord) -> dict:
    """What one msgpack map must hold for row: every non-default field under its proto
    name, addresses as text, enums by name."""
    out = {}
    for fd in DESC.fields:
        v = getattr(row, fd.name)
        if v == fd.default_value:
            continue
        if fd.name in ADDRESSES:
            v = str(ipaddress.ip_address(v))
        elif fd.enum_type is not None:
            v = fd.enum_type.values_by_number[v].name
        out[fd.name] = v
    return out


def test_msgpack_file_equals_protobuf_of_the_same_records(tmp_path, make_netns, populate):
    from xtcp2.config import Config
    from xtcp2.daemon import Daemon

    ns = make_netns()
    socks = populate(ns)
    out = tmp_path / "out.msgpack"
    d = Daemon(Config(netns=[ns], dest=f"file:{out}", marshal_to="msgpack", once=True, debug_level=0,
                      envelope_flush_threshold_rows=4))
    envelopes = []
    d.add_listener(lambda env: envelopes.append(bytes(env.body)))
    try:
        st = d.poll_once()
    finally:
        d.close()
    assert st.records >= len(socks)
    protobuf_rows = [list(pb.Envelope.FromString(body).row) for body in envelopes]
    with open(out, "rb") as fh:
        unpacked = list(msgpack.Unpacker(fh, raw=False, strict_map_key=True))
    # one msgpack array per destination message (envelope), in order, nothing else in the file
    assert len(unpacked) == len(protobuf_rows) > 1
    for arr, rows in zip(unpacked, protobuf_rows):
        assert isinstance(arr, list) and len(arr) == len(rows)
        for m, row in zip(arr, rows):
            assert m == expected_map(row)
    flat = [m for arr in unpacked for m in arr]
    assert len(flat) == st.records
    cookies = {m["inet_diag_msg_socket_cookie"] for m in flat}
    assert {s["cookie"] for s in socks} <= cookies
    est = [m for m in flat if m.get("inet_diag_msg_state") == 1]
    assert est and all(isinstance(m["tcp_info_rtt"], int) and m["tcp_info_rtt"] > 0 for m in est)
    assert {m["inet_diag_msg_socket_source"] for m in flat} >= {"127.0.0.1", "::1"}
