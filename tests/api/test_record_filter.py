"""Server-side filtering of the live stream (xtcp2-filter metadata)."""
from __future__ import annotations

import grpc
import pytest

from xtcp2.api.record_filter import RecordFilter
from xtcp2.errors import ConfigError
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as pb_grpc


def test_parse():
    f = RecordFilter.parse("netns=ns1, port=443,state=time-wait")
    assert (f.netns, f.port, f.state) == ("ns1", 443, 6)
    assert RecordFilter.parse(f.spec()) == f
    assert not RecordFilter.parse("")
    for bad, field in [("port=0", "port"), ("port=x", "port"), ("state=weird", "state"), ("colour=red", "filter")]:
        with pytest.raises(ConfigError) as e:
            RecordFilter.parse(bad)
        assert e.value.field == field


def test_match():
    r = pb.XtcpFlatRecord(netns="a", inet_diag_msg_socket_source_port=5000, inet_diag_msg_state=10)
    assert RecordFilter(port=5000, state=10)(r)
    assert RecordFilter(netns="a")(r) and not RecordFilter(netns="b")(r)
    assert not RecordFilter(state=1)(r) and not RecordFilter(port=1)(r)


@pytest.mark.root
def test_daemon_sends_only_matching_records(start_daemon, socket_netns):
    rd = start_daemon(poll_frequency=0.5, poll_timeout=0.4)
    with grpc.insecure_channel(rd.target) as ch:
        stub = pb_grpc.XTCPFlatRecordServiceStub(ch)
        call = stub.FlatRecords(pb.FlatRecordsRequest(), metadata=(("xtcp2-filter", "state=listen,port=5000"),),
                                timeout=10)
        got = [next(call).xtcp_flat_record for _ in range(3)]  # one listener per poll
        call.cancel()
        assert all((r.inet_diag_msg_state, r.inet_diag_msg_socket_source_port) == (10, 5000) for r in got)
        assert len({r.timestamp_ns for r in got}) == 3  # three different polls, nothing else in between

        bad = stub.FlatRecords(pb.FlatRecordsRequest(), metadata=(("xtcp2-filter", "state=nope"),), timeout=10)
        with pytest.raises(grpc.RpcError) as e:
            next(bad)
        assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "xtcp2-filter: state: unknown TCP state 'nope'" in e.value.details()
