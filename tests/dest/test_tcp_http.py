"""tcp, http(s) and stderr destinations.

tcp runs against a plain kernel TCP listener (for a byte stream the kernel is the
server). http runs against ClickHouseHTTPDouble: a DOUBLE of clickhouse-server's HTTP
front end (none installs here) that hands each body to the REAL ClickHouse engine
(chdb), so the ProtobufList decoding, the INSERT and the stored rows are ClickHouse's.
"""
from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests import need
from tests.servers import free_port
from xtcp2.dest import open_destination
from xtcp2.errors import DestinationError
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.marshal.protobuf_list import unmarshal

from .helpers import check_delivered, config, decode, make_payloads, make_record, outage_run, wait_for

ROOT = Path(__file__).resolve().parents[2]


class TCPReceiver:
    """A TCP listener that keeps whole Envelopes; can be killed and restarted on its port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.bodies: list[bytes] = []
        self.raw = bytearray()   # every byte received, in order
        self.sock = self.conn = self.thread = None

    def start(self) -> "TCPReceiver":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(4)
        self.sock = s
        self.thread = threading.Thread(target=self._run, args=(s,), daemon=True)
        self.thread.start()
        return self

    def _run(self, s) -> None:
        try:
            while True:
                c, _ = s.accept()
                self.conn = c
                buf = bytearray()
                while chunk := c.recv(1 << 16):
                    buf += chunk
                    self.raw += chunk
                    try:
                        self.bodies.extend(unmarshal(bytes(buf)))
                    except ValueError:
                        continue  # a torn tail: wait for the rest
                    buf.clear()
                c.close()
        except OSError:
            return

    def kill(self) -> None:
        if self.conn:
            try:
                self.conn.shutdown(socket.SHUT_RDWR)
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

    def rows(self) -> list:
        return [r for b in list(self.bodies) for r in pb.Envelope.FromString(b).row]


@pytest.fixture
def tcp_receiver():
    r = TCPReceiver().start()
    yield r
    if r.sock:
        r.kill()


def test_tcp_roundtrip_5000(tcp_receiver):
    d = open_destination(f"tcp:127.0.0.1:{tcp_receiver.port}", config())
    for p, n in make_payloads(5000, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 5000 and d.dropped_records == 0
    assert wait_for(lambda: len(tcp_receiver.rows()) == 5000, 10)
    rows = tcp_receiver.rows()
    assert [r.record_counter for r in rows] == list(range(5000))  # a stream keeps the order
    assert all(r == make_record(r.record_counter) for r in rows)


def test_tcp_receiver_killed_mid_stream(tcp_receiver):
    r = tcp_receiver
    d = open_destination(f"tcp:127.0.0.1:{r.port}?queue=100&backoffMax=0.2", config())
    counts = outage_run(d, r, before_kill=lambda: wait_for(lambda: len(r.rows()) >= 2000, 10))
    assert counts["dropped"] > 0, "100 payloads of queue cannot hold a 3000-record outage"
    assert wait_for(lambda: {x.record_counter for x in r.rows()} >= set(range(5000, 6000)), 10)
    check_delivered(r.rows(), counts, after_from=5000)


def test_tcp_receiver_absent_at_start_then_appears():
    r = TCPReceiver()
    d = open_destination(f"tcp:127.0.0.1:{r.port}?backoffMax=0.1", config())
    for p, n in make_payloads(300, 30):
        d.send(p, n)
    assert wait_for(lambda: d.errors > 0, 5)
    r.start()
    try:
        assert wait_for(lambda: d.queue_depth == 0, 10)
        d.close()
        assert d.sent_records == 300 and d.dropped_records == 0
        assert wait_for(lambda: len(r.rows()) == 300, 5)
    finally:
        r.kill()


def test_tcp_other_marshaller_bytes_verbatim(tcp_receiver):
    d = open_destination(f"tcp:127.0.0.1:{tcp_receiver.port}", config(marshal_to="protoJson"))
    payloads = make_payloads(10, 5, marshal="protoJson")
    for p, n in payloads:
        d.send(p, n)
    d.close()
    assert d.sent_records == 10
    want = b"".join(p for p, _ in payloads)
    assert wait_for(lambda: len(tcp_receiver.raw) >= len(want), 5)
    assert bytes(tcp_receiver.raw) == want  # no framing added or lost


@pytest.mark.parametrize("spec, msg", [
    ("tcp:", "expected host:port"),
    ("tcp:127.0.0.1", "expected host:port"),
    ("tcp:127.0.0.1:0", "expected 1..65535"),
    ("tcp:127.0.0.1:9?bogus=1", "unknown option(s) bogus"),
    ("tcp:127.0.0.1:9?timeout=-1", "timeout"),
    ("http:127.0.0.1:8123", "expected http://host[:port]/path"),
    ("http://127.0.0.1:99999/", "expected 1..65535"),
    ("http://127.0.0.1:8123/?retries=x", "retries"),
    ("http://127.0.0.1:8123/?caFile=/x", "caFile only applies to https"),
    ("https://127.0.0.1:8123/?caFile=/nonexistent", "caFile /nonexistent"),
])
def test_bad_address(spec, msg):
    with pytest.raises(DestinationError, match=re.escape(msg)):
        open_destination(spec, config())


def test_stderr_carries_payloads_verbatim(tmp_path):
    code = (
        "import sys\n"
        "from xtcp2.dest import open_destination\n"
        "from xtcp2.config import Config\n"
        "from tests.dest.helpers import make_payloads\n"
        "d = open_destination('stderr', Config(hostname='h'))\n"
        "for p, n in make_payloads(100, 10): d.send(p, n)\n"
        "d.flush(); d.close()\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT,
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout == b""
    rows = decode(r.stderr)
    assert [x.record_counter for x in rows] == list(range(100))


# ---- http(s) into ClickHouse ----------------------------------------------------------
chdb = need.module("chdb")

from xtcp2.tools import clickhouse_http_insert as chi  # noqa: E402
from xtcp2.tools import kafka_to_clickhouse as k2ch  # noqa: E402

from .clickhouse_http_double import ClickHouseHTTPDouble  # noqa: E402


@pytest.fixture(scope="module")
def ch_engine(tmp_path_factory):
    sink = k2ch.ChdbSink(str(tmp_path_factory.mktemp("outputs-chdb") / "db"), "xtcp")  # tables from our DDL
    yield sink.sess
    sink.close()


def truncate(sess) -> None:
    for v in k2ch.SCHEMA_VERSIONS:   # xtcp_flat_records is a Merge table: empty what it spans
        sess.query(f"TRUNCATE TABLE xtcp.xtcp_flat_records_v{v}")


@pytest.fixture
def clickhouse(ch_engine):
    truncate(ch_engine)
    server = ClickHouseHTTPDouble(ch_engine, str(Path(k2ch.proto_path()).parent), free_port()).start()
    yield server
    server.kill()


def stored(sess) -> list[int]:
    out = sess.query("SELECT record_counter FROM xtcp.xtcp_flat_records ORDER BY record_counter", "CSV")
    return [int(x) for x in out.bytes().decode().split()]


def stored_records(sess) -> list:
    """Rows back from ClickHouse as records, compared field by field with what was sent."""
    sql = ("SELECT record_counter, hostname, netns, tcp_info_rtt, hex(inet_diag_msg_socket_source), "
           "toUnixTimestamp64Nano(timestamp_ns), congestion_algorithm_string FROM xtcp.xtcp_flat_records")
    return [json.loads(x) for x in sess.query(sql, "JSONCompactEachRow").bytes().decode().splitlines()]


def test_http_insert_into_clickhouse_protobuflist(clickhouse):
    url = chi.dest_url(f"http://127.0.0.1:{clickhouse.port}")
    d = open_destination(url + "&flushTimeout=120", config())   # each insert runs the engine's MVs
    for p, n in make_payloads(3000, 100):
        d.send(p, n)
    d.close()
    assert d.sent_records == 3000 and d.dropped_records == 0
    assert clickhouse.inserts == 30
    assert stored(clickhouse.sess) == list(range(3000))
    for rc, host, netns, rtt, src, ts, cc in stored_records(clickhouse.sess):
        r = make_record(rc)
        assert (host, netns, rtt, bytes.fromhex(src), int(ts), cc) == (
            r.hostname, r.netns, r.tcp_info_rtt, r.inet_diag_msg_socket_source, r.timestamp_ns,
            r.congestion_algorithm_string)


def test_http_plain_insert_format_with_settings(clickhouse, tmp_path):
    """The shorter statement upstream's tool sends: INSERT INTO t SETTINGS format_schema=... FORMAT ProtobufList."""
    clickhouse.sess.query("CREATE TABLE IF NOT EXISTS xtcp.plain (record_counter UInt64, hostname String) "
                          "ENGINE = MergeTree ORDER BY record_counter")
    clickhouse.sess.query("TRUNCATE TABLE xtcp.plain")
    q = ("INSERT INTO xtcp.plain SETTINGS format_schema='xtcp_flat_record.proto:XtcpFlatRecord', "
         "input_format_skip_unknown_fields=1 FORMAT ProtobufList")
    from urllib.parse import quote
    d = open_destination(f"http://127.0.0.1:{clickhouse.port}/?query={quote(q)}&flushTimeout=120", config())
    for p, n in make_payloads(200, 50):
        d.send(p, n)
    d.close()
    assert d.sent_records == 200
    got = clickhouse.sess.query("SELECT count(), sum(record_counter) FROM xtcp.plain", "CSV").bytes().decode()
    assert got.strip() == f"200,{sum(range(200))}"


def test_http_server_killed_mid_stream(clickhouse):
    url = chi.dest_url(f"http://127.0.0.1:{clickhouse.port}") + "&queue=20&backoffMax=0.2&flushTimeout=120"
    d = open_destination(url, config())
    counts = outage_run(d, clickhouse, per=100)   # 30 payloads during the outage, room for 20
    assert counts["dropped"] > 0
    rows = stored(clickhouse.sess)
    assert len(set(rows)) == counts["sent"]
    assert set(range(5000, 6000)) <= set(rows)


def test_http_5xx_retried_then_delivered(clickhouse):
    clickhouse.fail_next = 3
    d = open_destination(chi.dest_url(f"http://127.0.0.1:{clickhouse.port}") + "&backoffMax=0.1&flushTimeout=120", config())
    for p, n in make_payloads(500, 100):
        d.send(p, n)
    d.close()
    assert d.sent_records == 500 and d.dropped_records == 0
    assert d.errors == 3
    assert stored(clickhouse.sess) == list(range(500))


def test_http_5xx_beyond_retries_dropped_and_counted(clickhouse):
    clickhouse.fail_next = 3
    d = open_destination(chi.dest_url(f"http://127.0.0.1:{clickhouse.port}") + "&retries=2&backoffMax=0.1&flushTimeout=120", config())
    for p, n in make_payloads(500, 100):
        d.send(p, n)
    d.close()
    # the first payload is answered 503 three times: tried 1 + 2 retries, then dropped
    assert (d.sent_records, d.dropped_records) == (400, 100)
    assert stored(clickhouse.sess) == list(range(100, 500))


def test_http_rejected_payload_dropped_others_delivered(clickhouse):
    d = open_destination(chi.dest_url(f"http://127.0.0.1:{clickhouse.port}") + "&flushTimeout=120", config())
    good = make_payloads(200, 100)
    d.send(good[0][0], good[0][1])
    d.send(b"\x05garbage-not-an-envelope", 7)
    d.send(good[1][0], good[1][1])
    d.close()
    assert (d.sent_records, d.dropped_records) == (200, 7)
    assert "HTTP 400" in d._last_error and "Code:" in d._last_error
    assert stored(clickhouse.sess) == list(range(200))


def test_http_basic_auth_from_env_file(ch_engine, tmp_path, monkeypatch):
    truncate(ch_engine)
    server = ClickHouseHTTPDouble(ch_engine, str(Path(k2ch.proto_path()).parent), free_port(),
                                  user="xtcp", password="s3cret").start()
    try:
        url = chi.dest_url(f"http://127.0.0.1:{server.port}")
        d = open_destination(url, config())   # no credentials: 401 is permanent, counted
        d.send(*make_payloads(10, 10)[0])
        d.close()
        assert d.dropped_records == 10 and "401" in d._last_error
        secret = tmp_path / "pw"
        secret.write_text("s3cret\n")
        monkeypatch.setenv("XTCP2_HTTP_USER", "xtcp")
        monkeypatch.setenv("XTCP2_HTTP_PASSWORD_FILE", str(secret))
        d = open_destination(url + "&flushTimeout=120", config())
        d.send(*make_payloads(10, 10)[0])
        d.close()
        assert d.sent_records == 10
        assert stored(ch_engine) == list(range(10))
    finally:
        server.kill()


def test_http_tool_prints_dest_and_inserts_files(clickhouse, tmp_path):
    out = subprocess.run([sys.executable, "-m", "xtcp2.tools.clickhouse_http_insert", "--url",
                          f"http://127.0.0.1:{clickhouse.port}", "--dest"], capture_output=True, text=True,
                         cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == chi.dest_url(f"http://127.0.0.1:{clickhouse.port}")
    files = []
    for i, (p, _) in enumerate(make_payloads(300, 100)):
        files.append(tmp_path / f"{i}.bin")
        files[-1].write_bytes(p)
    r = subprocess.run([sys.executable, "-m", "xtcp2.tools.clickhouse_http_insert", "--url",
                        f"http://127.0.0.1:{clickhouse.port}", *map(str, files)], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert r.returncode == 0, r.stderr
    assert stored(clickhouse.sess) == list(range(300))
