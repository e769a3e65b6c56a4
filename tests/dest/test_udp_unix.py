"""udp, unix and unixgram destinations against real kernel sockets (the receivers here
are plain sockets: for these transports the kernel is the server)."""
from __future__ import annotations

import os
import socket
import threading

import pytest

from tests.servers import free_port
from xtcp2.dest import open_destination
from xtcp2.errors import DestinationError
from xtcp2.marshal.protobuf_list import unmarshal

from .helpers import check_delivered, config, decode, make_payloads, make_record, outage_run, wait_for


class Receiver:
    """A socket receiver that can be killed and started again at the same address."""

    def __init__(self, kind: str, path: str = "") -> None:
        self.kind, self.path = kind, path
        self.port = free_port() if kind == "udp" else 0
        self.chunks: list[bytes] = []
        self.sock = None
        self.conn = None
        self.thread = None

    def start(self) -> "Receiver":
        if self.kind == "udp":
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind(("127.0.0.1", self.port))
        else:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM if self.kind == "unix" else socket.SOCK_DGRAM)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            s.bind(self.path)
            if self.kind == "unix":
                s.listen(4)
        self.sock = s
        self.thread = threading.Thread(target=self._run, args=(s,), daemon=True)
        self.thread.start()
        return self

    def _run(self, s) -> None:
        try:
            if self.kind == "unix":
                while True:
                    c, _ = s.accept()
                    self.conn = c
                    buf = bytearray()
                    while chunk := c.recv(1 << 16):
                        buf += chunk
                        # keep whole envelopes only; a torn tail stays in buf
                        try:
                            bodies = unmarshal(bytes(buf))
                        except ValueError:
                            continue
                        self.chunks.extend(bodies)
                        buf.clear()
                    c.close()
            else:
                while True:
                    self.chunks.append(s.recv(1 << 22))
        except OSError:
            return

    def kill(self) -> None:
        for c in (self.conn,):
            if c:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        s, self.sock = self.sock, None
        if s:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        self.thread.join(5)
        if self.path and os.path.exists(self.path):
            os.unlink(self.path)

    def rows(self):
        from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
        if self.kind == "unix":
            return [r for b in list(self.chunks) for r in pb.Envelope.FromString(b).row]
        return [r for c in list(self.chunks) for r in decode(c)]


@pytest.fixture
def receiver_factory(tmp_path):
    made = []

    def make(kind):
        r = Receiver(kind, str(tmp_path / f"{kind}.sock") if kind != "udp" else "").start()
        made.append(r)
        return r
    yield make
    for r in made:
        if r.sock:
            r.kill()


def addr(kind, r):
    return f"udp:127.0.0.1:{r.port}" if kind == "udp" else f"{kind}:{r.path}"


@pytest.mark.parametrize("kind", ["udp", "unix", "unixgram"])
def test_roundtrip_5000(kind, receiver_factory):
    r = receiver_factory(kind)
    d = open_destination(addr(kind, r), config())
    for p, n in make_payloads(5000, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    assert wait_for(lambda: len(r.rows()) >= 5000, 10)
    rows = r.rows()
    assert [x.record_counter for x in rows] == list(range(5000))
    assert all(x == make_record(x.record_counter) for x in rows)
    if kind == "udp":
        assert max(len(c) for c in r.chunks) <= 1400
        assert d.datagrams == len(r.chunks) > 100  # 100 envelopes of ~12 KB re-packed into MTU-sized datagrams


@pytest.mark.parametrize("kind", ["udp", "unix", "unixgram"])
def test_receiver_killed_mid_stream(kind, receiver_factory):
    r = receiver_factory(kind)
    d = open_destination(addr(kind, r) + "?queue=100&backoffMax=0.2", config())
    # a receiver that had read everything sent so far, then crashed; for udp the
    # datagrams sent before the ICMP port-unreachable comes back are lost unseen
    counts = outage_run(d, r, before_kill=lambda: wait_for(lambda: len(r.rows()) >= 2000, 10))
    assert wait_for(lambda: {x.record_counter for x in r.rows()} >= set(range(5000, 6000)), 10)
    rows = r.rows()
    if kind == "udp":
        got = {x.record_counter for x in rows}
        assert got <= set(range(6000)) and set(range(5000, 6000)) <= got
        assert all(x == make_record(x.record_counter) for x in rows)
        assert d.errors > 0, "ICMP port unreachable must surface as counted errors"
    else:
        assert counts["dropped"] > 0
        check_delivered(rows, counts, after_from=5000)


def test_udp_oversized_rows_dropped_and_counted(receiver_factory):
    r = receiver_factory("udp")
    d = open_destination(f"udp:127.0.0.1:{r.port}?maxDatagram=64", config())
    (p, n), = make_payloads(10, 10)
    d.send(p, n)
    d.close()
    assert d.dropped_records == 10 and d.sent_records == 0


def test_udp_other_marshallers_one_datagram_per_payload(receiver_factory):
    r = receiver_factory("udp")
    d = open_destination(f"udp:127.0.0.1:{r.port}?maxDatagram=2000", config(marshal_to="protoJson"))
    small = make_payloads(2, 2, marshal="protoJson")[0]
    big = make_payloads(50, 50, marshal="protoJson")[0]
    d.send(*small)
    d.send(*big)
    d.close()
    assert d.sent_records == 2 and d.dropped_records == 50
    assert wait_for(lambda: len(r.chunks) == 1, 5)


@pytest.mark.parametrize("spec, msg", [
    ("udp:127.0.0.1", "expected host:port"),
    ("udp:127.0.0.1:53?maxDatagram=70000", "maxDatagram must be <= 65507"),
    ("udp:no.such.host.invalid:53", "cannot resolve"),
    ("unix:", "needs a socket path"),
    ("unixgram:/" + "x" * 120, "longer than 107 bytes"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=msg):
        open_destination(spec, config())
