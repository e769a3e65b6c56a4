"""The live-record fan-out: byte-exact responses, bounded per-client queues, O(1) publish."""
from __future__ import annotations

import asyncio
import time

import pytest

import numpy as np

from xtcp2.api.record_fanout import FanOut, envelope_responses, sliced_responses
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.records.envelope import EncodedEnvelope

from ..prom import sample


def records(n: int, big: bool = False) -> list[pb.XtcpFlatRecord]:
    return [pb.XtcpFlatRecord(hostname="h" * (300 if big else 3), netns=f"ns{i}",
                              inet_diag_msg_socket_source_port=i, tcp_info_rtt=i * 1000,
                              timestamp_ns=1_700_000_000_000_000_000 + i) for i in range(n)]


@pytest.mark.parametrize("big", [False, True])
def test_responses_equal_protobuf_serialization(big):
    recs = records(50, big)
    env = EncodedEnvelope.from_records(recs)
    got = envelope_responses(env.body)
    want = [pb.FlatRecordsResponse(xtcp_flat_record=r).SerializeToString() for r in recs]
    assert got == want
    # and the bidi response type has the same layout
    assert [pb.PollFlatRecordsResponse.FromString(b).xtcp_flat_record for b in got] == recs


@pytest.mark.parametrize("big", [False, True])
def test_responses_cut_at_known_row_ends_equal_the_parsed_ones(big):
    recs = records(50, big)
    env = EncodedEnvelope.from_records(recs)
    ends = np.cumsum([len(pb.Envelope(row=[r]).SerializeToString()) for r in recs])
    assert sliced_responses(env.body, ends) == envelope_responses(env.body)
    # boundaries that do not match the body: not trusted, the parser decides
    assert sliced_responses(env.body, ends[:-1]) is None
    assert sliced_responses(env.body, ends + 1) is None
    other = b"\x5a\x01x" + env.body  # an unknown field (11) first: its "row" is not a row
    assert sliced_responses(other, np.concatenate([[3], ends + 3])) is None


def test_truncated_envelope_is_an_error():
    body = EncodedEnvelope.from_records(records(3)).body
    with pytest.raises((ValueError, IndexError)):
        envelope_responses(body[:-5])


def test_empty_envelope():
    assert envelope_responses(b"") == []


def test_full_queue_drops_for_that_client_only(registry):
    loop = asyncio.new_event_loop()
    try:
        fan = FanOut(loop, queue_rows=100)
        slow = loop.run_until_complete(_sub(fan, "slow"))
        fast = loop.run_until_complete(_sub(fan, "fast"))
        env = EncodedEnvelope.from_records(records(40))
        drops_before = sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords")
        for i in range(5):
            fan.publish(env)
            # the fast client drains after every envelope, the slow one never
            got = loop.run_until_complete(fan.next_batch(fast, 1))
            assert len(got) == 40
        assert fast.dropped_records == 0 and fast.queued_rows == 0
        assert slow.queued_rows == 80 and slow.dropped_records == 120  # 2 fit, 3 dropped
        assert sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords") - drops_before == 120
        fan.unsubscribe(slow)
        fan.unsubscribe(fast)
        assert fan.subscribers() == []
    finally:
        loop.close()


def test_publish_cost_does_not_depend_on_client_speed():
    loop = asyncio.new_event_loop()
    try:
        fan = FanOut(loop, queue_rows=10**9)
        for i in range(20):
            loop.run_until_complete(_sub(fan, f"c{i}"))
        env = EncodedEnvelope.from_records(records(1000))
        t0 = time.perf_counter()
        for _ in range(200):
            fan.publish(env)  # nobody reads: must still return at once
        per_call = (time.perf_counter() - t0) / 200
        assert per_call < 0.002, per_call  # appends references; no per-record work here
    finally:
        loop.close()


async def _sub(fan: FanOut, name: str):
    return fan.subscribe("FlatRecords", name)


def test_filter_applies_before_the_queue_and_only_matches_are_dropped(registry):
    from xtcp2.api.record_filter import RecordFilter

    loop = asyncio.new_event_loop()
    try:
        fan = FanOut(loop, queue_rows=10)
        picky = fan.subscribe("FlatRecords", "picky", RecordFilter(port=7))  # 1 of 40 rows match
        none = fan.subscribe("FlatRecords", "none", RecordFilter(netns="nowhere"))
        recs = records(40)
        for r in recs[:4]:
            r.inet_diag_msg_socket_destination_port = 1000
        sel = fan.subscribe("FlatRecords", "sel", RecordFilter(port=1000))   # 4 of 40 rows match
        env = EncodedEnvelope.from_records(recs)
        drops_before = sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords")
        unsent_before = sample(registry, "xtcp2_grpc_stream_unsent_records_total")
        for _ in range(5):
            fan.publish(env)  # nobody reads
        # unfiltered, 40 rows would not fit a 10-row queue at all; filtered, 1 and 4 do
        assert (picky.queued_rows, picky.dropped_records) == (5, 0)
        assert (sel.queued_rows, sel.dropped_records) == (8, 12)  # 2 envelopes fit, 3 x 4 matching rows dropped
        assert (none.queued_rows, none.dropped_records) == (0, 0)
        assert sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords") - drops_before == 12
        got = loop.run_until_complete(fan.next_batch(sel, 1))
        assert [pb.FlatRecordsResponse.FromString(b).xtcp_flat_record for b in got] == recs[:4]
        got = loop.run_until_complete(fan.next_batch(picky, 1))
        assert [pb.FlatRecordsResponse.FromString(b).xtcp_flat_record.inet_diag_msg_socket_source_port
                for b in got] == [7]
        # an orderly end leaves rows queued: not drops
        fan.unsubscribe(sel)
        fan.unsubscribe(picky)
        fan.unsubscribe(none)
        assert (sel.dropped_records, sel.unsent_records) == (12, 4)
        assert (picky.dropped_records, picky.unsent_records) == (0, 4)
        assert sample(registry, "xtcp2_grpc_stream_dropped_records_total", method="FlatRecords") - drops_before == 12
        assert sample(registry, "xtcp2_grpc_stream_unsent_records_total") - unsent_before == 8
    finally:
        loop.close()
