"""nats: destination against a real nats-server (Debian package), core and JetStream."""
from __future__ import annotations

import asyncio
import threading

import pytest

from .. import need

nats = need.module("nats")

from xtcp2.dest import open_destination  # noqa: E402
from xtcp2.errors import DestinationError  # noqa: E402

from .helpers import check_delivered, config, decode, make_payloads, make_record, outage_run, wait_for  # noqa: E402

pytestmark = [pytest.mark.servers]


def run(coro):
    return asyncio.run(coro)


async def add_stream(port: int, name: str = "XTCP", subject: str = "xtcp") -> None:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    await nc.jetstream().add_stream(name=name, subjects=[subject])
    await nc.close()


async def stream_payloads(port: int, name: str = "XTCP") -> list[bytes]:
    nc = await nats.connect(f"nats://127.0.0.1:{port}")
    js = nc.jetstream()
    info = await js.stream_info(name)
    out = [(await js.get_msg(name, seq)).data for seq in range(info.state.first_seq, info.state.last_seq + 1)]
    await nc.close()
    return out


def test_core_publish_roundtrip_5000(nats_server):
    got, ready = [], threading.Event()

    async def subscriber():
        nc = await nats.connect(f"nats://127.0.0.1:{nats_server.port}")
        sub = await nc.subscribe("xtcp.t")
        await nc.flush()
        ready.set()
        try:
            while len(got) < 100:
                got.append((await sub.next_msg(timeout=10)).data)
        finally:
            await nc.close()

    t = threading.Thread(target=lambda: run(subscriber()))
    t.start()
    assert ready.wait(10)
    d = open_destination(f"nats:127.0.0.1:{nats_server.port}?subject=xtcp.t", config())
    for p, n in make_payloads(5000, 50):
        d.send(p, n)
    d.close()
    t.join(15)
    assert d.sent_records == 5000 and d.dropped_records == 0
    rows = [r for v in got for r in decode(v)]
    assert [r.record_counter for r in rows] == list(range(5000))
    assert all(r == make_record(r.record_counter) for r in rows)


@pytest.mark.slow
def test_jetstream_server_killed_mid_stream(nats_server):
    run(add_stream(nats_server.port))
    d = open_destination(f"nats:127.0.0.1:{nats_server.port}?jetstream=1&queue=100&backoffMax=0.2", config())
    counts = outage_run(d, nats_server)
    assert counts["dropped"] > 0
    rows = [r for v in run(stream_payloads(nats_server.port)) for r in decode(v)]
    check_delivered(rows, counts, after_from=5000)
    assert len(rows) == counts["sent"], "JetStream de-duplication by Nats-Msg-Id"


def test_jetstream_without_stream_is_reported(nats_server, caplog):
    d = open_destination(f"nats:127.0.0.1:{nats_server.port}?jetstream=1&subject=nostream&flushTimeout=0.5",
                         config())
    (p, n), = make_payloads(10, 10)
    d.send(p, n)
    assert wait_for(lambda: d.errors > 0, 10)
    d.close()
    assert d.dropped_records == 10 and d.sent_records == 0
    assert "no JetStream stream captures subject 'nostream'" in caplog.text


@pytest.mark.parametrize("spec, msg", [
    ("nats:127.0.0.1:4222?subject=a b", "not a valid publish subject"),
    ("nats:127.0.0.1:4222?subject=xtcp.*", "not a valid publish subject"),
    ("nats:host:port", "bad port"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=msg):
        open_destination(spec, config())
