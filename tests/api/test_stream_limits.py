"""Bounds of the live stream: client limit and trailing drop count."""
from __future__ import annotations

import threading
import time

import grpc
import pytest

from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2_grpc as pb_grpc

pytestmark = pytest.mark.root


def test_client_limit_is_resource_exhausted(start_daemon):
    rd = start_daemon(server_kw={"max_clients": 2}, poll_frequency=0.5, poll_timeout=0.4)
    with grpc.insecure_channel(rd.target) as ch:
        stub = pb_grpc.XTCPFlatRecordServiceStub(ch)
        calls = [stub.FlatRecords(pb.FlatRecordsRequest(), timeout=20) for _ in range(2)]
        for c in calls:
            next(c)  # both admitted and receiving
        extra = stub.FlatRecords(pb.FlatRecordsRequest(), timeout=20)
        with pytest.raises(grpc.RpcError) as e:
            next(extra)
        assert e.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "limit 2" in e.value.details()
        calls[0].cancel()
        deadline = time.monotonic() + 5
        while len(rd.server.subscribers()) > 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        again = stub.FlatRecords(pb.FlatRecordsRequest(), timeout=20)
        assert next(again).xtcp_flat_record.netns  # a freed slot is usable again
        again.cancel()
        calls[1].cancel()


def test_drop_count_in_trailing_metadata_at_shutdown(start_daemon):
    rd = start_daemon(server_kw={"queue_rows": 150}, poll_frequency=0.25, poll_timeout=0.2)
    ch = grpc.insecure_channel(rd.target, options=[("grpc.http2.bdp_probe", 0)])
    call = pb_grpc.XTCPFlatRecordServiceStub(ch).FlatRecords(pb.FlatRecordsRequest(), timeout=30)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not any(s.dropped_records for s in rd.server.subscribers()):
        time.sleep(0.1)  # not reading: the window and then the queue fill up
    dropped = rd.server.subscribers()[0].dropped_records
    assert dropped > 0
    got = []
    reader = threading.Thread(target=lambda: got.extend(call))  # start reading, then shut down
    reader.start()
    rd.server.stop(grace=5)
    reader.join(timeout=10)
    assert len(got) > 0 and call.code() == grpc.StatusCode.OK  # ended normally, not cancelled
    trailers = dict(call.trailing_metadata())
    assert int(trailers["xtcp2-dropped-records"]) >= dropped
    ch.close()
