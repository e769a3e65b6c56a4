"""nsq: destination against a PROTOCOL TEST DOUBLE of nsqd (tests/servers/nsq_double.py),
NOT a real nsqd: no nsqd is installable here (not in PyPI, npm or Debian). The double
implements nsqd's documented TCP publish protocol (magic, IDENTIFY, PUB/MPUB, framed
replies, heartbeats, topic and size validation)."""
from __future__ import annotations

import time

import pytest

from tests.servers.nsq_double import NsqdDouble
from xtcp2.dest import open_destination
from xtcp2.errors import DestinationError

from .helpers import check_delivered, config, decode, make_payloads, make_record, outage_run, wait_for


def test_mpub_roundtrip_5000(nsqd_double):
    d = open_destination(f"nsq:127.0.0.1:{nsqd_double.port}?topic=xtcp", config())
    for p, n in make_payloads(5000, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    msgs = nsqd_double.messages("xtcp")
    assert len(msgs) == 100
    rows = [r for m in msgs for r in decode(m)]
    assert [r.record_counter for r in rows] == list(range(5000))
    assert all(r == make_record(r.record_counter) for r in rows)


def test_server_killed_mid_stream(nsqd_double):
    d = open_destination(f"nsq:127.0.0.1:{nsqd_double.port}?queue=100&backoffMax=0.2", config())
    counts = outage_run(d, nsqd_double)
    assert counts["dropped"] > 0
    rows = [r for m in nsqd_double.messages("xtcp") for r in decode(m)]
    check_delivered(rows, counts, after_from=5000)


def test_heartbeats_are_answered():
    srv = NsqdDouble(heartbeat_interval=0.1).start()
    try:
        d = open_destination(f"nsq:127.0.0.1:{srv.port}", config())
        (p, n), = make_payloads(10, 10)
        d.send(p, n)
        assert wait_for(lambda: d.sent_records == 10, 5)
        time.sleep(0.5)  # several heartbeats: only the replies to them keep the link up...
        d.send(p, n)     # ...and the next MPUB reads past the queued heartbeats
        assert wait_for(lambda: d.sent_records == 20, 5)
        d.close()
        assert d.errors == 0
    finally:
        srv.close()


def test_oversized_message_dropped_and_counted():
    srv = NsqdDouble(max_msg_size=1000).start()
    try:
        d = open_destination(f"nsq:127.0.0.1:{srv.port}?flushTimeout=2", config())
        (big, n), = make_payloads(100, 100)
        assert len(big) > 1000
        d.send(big, n)
        (small, m), = make_payloads(2, 2, 100)
        d.send(small, m)
        d.close()
        assert d.dropped_records == 100 and d.sent_records == 2
        assert [r.record_counter for r in decode(srv.messages("xtcp")[0])] == [100, 101]
    finally:
        srv.close()


@pytest.mark.parametrize("spec, msg", [
    ("nsq:127.0.0.1:4150?topic=bad topic", "is not valid"),
    ("nsq:127.0.0.1:4150?topic=" + "a" * 65, "is not valid"),
    ("nsq:[::1", "missing ']'"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=msg):
        open_destination(spec, config())
