"""kafka: destination against a real Kafka-wire broker (Tansu), decoded back."""
from __future__ import annotations

import time

import pytest

from .. import need

need.module("confluent_kafka")
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402

from .helpers import config, decode, make_payloads, make_record, wait_for  # noqa: E402

pytestmark = [pytest.mark.servers]


def consume_all(bootstrap: str, topic: str, expect_msgs: int, timeout: float = 20.0):
    """Read partition 0 from the start until expect_msgs messages or timeout."""
    extra = bootstrap if isinstance(bootstrap, dict) else {"bootstrap.servers": bootstrap}  # dict: TLS settings
    c = Consumer({**extra, "group.id": "t", "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    c.assign([TopicPartition(topic, 0, 0)])
    msgs, deadline = [], time.monotonic() + timeout
    try:
        while len(msgs) < expect_msgs and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                msgs.append(m)
    finally:
        c.close()
    return msgs


def test_roundtrip_5000_records(tansu):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}?compression=zstd&key=hostname", config())
    payloads = make_payloads(5000, 50)
    for p, n in payloads:
        d.send(p, n)
    d.flush(20)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    msgs = consume_all(tansu.bootstrap, "xtcp", len(payloads))
    assert len(msgs) == len(payloads)
    assert all(m.key() == b"testhost" for m in msgs)
    rows = [r for m in msgs for r in decode(m.value())]
    assert [r.record_counter for r in rows] == list(range(5000))
    for r in rows:
        assert r == make_record(r.record_counter)


def test_broker_killed_mid_stream_nothing_lost_silently(tansu):
    tansu.create_topic("xtcp")
    d = open_destination(f"kafka:{tansu.bootstrap}?queue=120&backoffMax=0.2&stallTimeoutMs=1500", config())
    produced = 0
    first = make_payloads(2000, 20, 0)
    for p, n in first:
        d.send(p, n)
        produced += n
    assert wait_for(lambda: d.sent_records == 2000, 20)
    # Tansu keeps its log in memory: read what it acknowledged before it dies
    before = [r for m in consume_all(tansu.bootstrap, "xtcp", len(first)) for r in decode(m.value())]
    assert len(before) == 2000

    tansu.kill()
    outage = make_payloads(6000, 20, 2000)  # 300 payloads; ours and librdkafka's queue hold 120 each
    for p, n in outage:
        d.send(p, n)
        produced += n
    time.sleep(1.0)
    tansu.start()
    tansu.create_topic("xtcp")
    # the backlog drains once the broker is back; records produced after that all arrive
    assert wait_for(lambda: d.queue_depth == 0 and d.sent_records > 2000, 30)
    after = make_payloads(1000, 20, 8000)
    for p, n in after:
        d.send(p, n)
        produced += n
    d.close()
    assert d.sent_records + d.dropped_records == produced == 9000
    assert d.dropped_records > 0, "the outage overflowed the queues: drops must be counted"
    # the restarted in-memory broker forgot the idempotent producer: it was replaced
    assert d.producers_replaced >= 1
    later = [r for m in consume_all(tansu.bootstrap, "xtcp", 10_000, timeout=5) for r in decode(m.value())]
    got = {r.record_counter for r in before} | {r.record_counter for r in later}
    assert len(before) + len(later) == len(got), "duplicates delivered"
    assert len(got) == d.sent_records
    for r in before + later:
        assert r == make_record(r.record_counter)
    assert set(range(8000, 9000)) <= got, "records sent after the restart must all arrive"


def test_server_down_at_start_queues_then_delivers(tansu):
    tansu.kill()
    d = open_destination(f"kafka:{tansu.bootstrap}?backoffMax=0.2", config())
    for p, n in make_payloads(500, 50):
        d.send(p, n)
    time.sleep(0.5)
    assert d.sent_records == 0
    tansu.start()
    tansu.create_topic("xtcp")
    assert wait_for(lambda: d.sent_records == 500, 30)
    d.close()
    assert d.dropped_records == 0


@pytest.mark.parametrize("spec, msg", [
    ("kafka:", "needs host:port"),
    ("kafka:127.0.0.1:99999", "bad port"),
    ("kafka:127.0.0.1:9092?compression=brotli", "compression 'brotli' unknown"),
    ("kafka:127.0.0.1:9092?key=netns", "key 'netns' unknown"),
    ("kafka:127.0.0.1:9092?bogus=1", "unknown option(s) bogus"),
    ("kafka:127.0.0.1:9092?topic=a/b", "topic 'a/b' is not valid"),
    ("kafak:127.0.0.1:9092", "unknown destination scheme 'kafak'"),
])
def test_bad_address_is_one_line_error(spec, msg):
    with pytest.raises(DestinationError) as e:
        open_destination(spec, config())
    assert msg in str(e.value) and "\n" not in str(e.value)
