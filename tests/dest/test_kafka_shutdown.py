"""Shutdown and loss accounting against a real Kafka-wire broker (Tansu) that dies
mid-run: close() keeps flushTimeout, every record is either delivered (read back with a
real consumer) or counted dropped, in the object, the metrics and the closing log line;
an outage shows in the errors and queue-depth metrics at once."""
from __future__ import annotations

import logging
import time

import pytest
from prometheus_client import REGISTRY

from .. import need

need.module("confluent_kafka")
from confluent_kafka import Consumer, TopicPartition  # noqa: E402

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.dest.queued import CLOSE_GRACE  # noqa: E402

from .helpers import config, decode, make_payloads, wait_for  # noqa: E402

pytestmark = [pytest.mark.servers]


def metric(name: str) -> float:
    return REGISTRY.get_sample_value(name, {"dest": "kafka"}) or 0.0


def read_topic(bootstrap: str, topic: str, quiet: float = 2.0, timeout: float = 30.0) -> list:
    """Every record in every partition (a topic auto-created by a producer's metadata
    request may have several): read from offset 0 until nothing new came for `quiet`
    seconds (Tansu 0.6 reports a high watermark of 1 whatever the log holds)."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "secrel", "enable.auto.commit": False,
                  "auto.offset.reset": "earliest"})
    try:
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        rows, deadline = [], time.monotonic() + timeout
        last_new = time.monotonic()
        while time.monotonic() - last_new < quiet and time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and not m.error():
                rows.extend(decode(m.value()))
                last_new = time.monotonic()
        return rows
    finally:
        c.close()


def test_broker_dies_close_keeps_deadline_and_counts_exactly(tansu, caplog):
    tansu.create_topic("xtcp")
    names = ("xtcp2_dest_sent_records_total", "xtcp2_dest_dropped_records_total", "xtcp2_dest_errors_total")
    base = {n: metric(n) for n in names}
    flush_timeout = 1.5
    d = open_destination(f"kafka:{tansu.bootstrap}?queue=40&flushTimeout={flush_timeout}&backoffMax=0.2"
                         "&stallTimeoutMs=60000", config())
    produced = 0
    for p, n in make_payloads(1000, 50, 0):  # 20 payloads: within the queue
        d.send(p, n)
        produced += n
    assert wait_for(lambda: d.sent_records == 1000, 20)
    delivered = read_topic(tansu.bootstrap, "xtcp")
    assert len(delivered) == 1000

    tansu.kill()
    saw_depth = saw_errors = False
    t_kill = time.monotonic()
    for p, n in make_payloads(2000, 20, 1000):  # 100 payloads over ~3 s; the queues hold 40 + 40
        d.send(p, n)
        produced += n
        time.sleep(0.03)
        saw_depth |= (REGISTRY.get_sample_value("xtcp2_dest_queue_depth", {"dest": "kafka"}) or 0) > 0
        if not saw_errors and metric("xtcp2_dest_errors_total") > base["xtcp2_dest_errors_total"]:
            saw_errors = True
            errors_after = time.monotonic() - t_kill
    assert saw_depth, "queue depth read 0 all through the outage"
    assert saw_errors and errors_after < 3, "errors read 0 during the outage"

    caplog.set_level(logging.INFO, logger="xtcp2.dest")
    t0 = time.monotonic()
    d.close()  # must not raise (it did: a negative pending count fed Counter.inc)
    took = time.monotonic() - t0
    assert took <= flush_timeout + CLOSE_GRACE + 0.2, f"close() took {took:.2f}s"

    assert d.sent_records == len(delivered) == 1000
    assert d.dropped_records == produced - len(delivered) == 2000
    assert metric("xtcp2_dest_sent_records_total") - base["xtcp2_dest_sent_records_total"] == 1000
    assert metric("xtcp2_dest_dropped_records_total") - base["xtcp2_dest_dropped_records_total"] == 2000
    assert REGISTRY.get_sample_value("xtcp2_dest_queue_depth", {"dest": "kafka"}) == 0
    lines = [r.getMessage() for r in caplog.records]
    assert any("closed: 1000 records delivered, 2000 dropped in total" in m for m in lines), lines[-5:]

