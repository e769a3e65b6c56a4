"""Merging staged record parts: per-part constants become columns, rows keep their values."""
from __future__ import annotations

import numpy as np

from xtcp2.columns import BytesColumn, Columns, merge
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.records.encode import encode_rows


def test_merge_keeps_each_row_and_its_namespace_and_trigger():
    a = Columns(2, {"inet_diag_msg_socket_source_port": np.array([1, 2], np.uint32),
         "inet_diag_msg_socket_source": BytesColumn(np.array([[127, 0, 0, 1], [10, 0, 0, 2]], np.uint8),
                                                    np.array([4, 4], np.uint8))})
    b = Columns(1, {"inet_diag_msg_socket_source_port": np.array([3], np.uint32),
         "tcp_info_bytes_acked": np.array([99], np.uint64),
         "inet_diag_msg_socket_source": BytesColumn(np.arange(16, dtype=np.uint8)[None, :], np.array([16], np.uint8))})
    cols, consts = merge([
        (a, {"hostname": "h", "netns": "one", "netns_inode": 11, "trigger": 1}),
        (b, {"hostname": "h", "netns": "a-longer-name", "netns_inode": 22, "trigger": 2}),
    ])
    n = cols.n
    assert n == 3 and consts == {"hostname": "h"}
    body, _ = encode_rows(cols, n, consts)
    rows = pb.Envelope.FromString(body).row
    assert [r.inet_diag_msg_socket_source_port for r in rows] == [1, 2, 3]
    assert [r.netns for r in rows] == ["one", "one", "a-longer-name"]
    assert [r.netns_inode for r in rows] == [11, 11, 22]
    assert [r.trigger for r in rows] == [1, 1, 2]
    assert [r.tcp_info_bytes_acked for r in rows] == [0, 0, 99]
    assert [r.inet_diag_msg_socket_source for r in rows] == [bytes([127, 0, 0, 1]), bytes([10, 0, 0, 2]), bytes(range(16))]
    assert all(r.hostname == "h" for r in rows)
