"""Every output format read back by a standard reader (json, csv, msgpack, protobuf), on
records decoded from real captures (IPv4 and IPv6)."""
from __future__ import annotations

import base64
import csv
import io
import ipaddress
import json
import os
import pty
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from google.protobuf import json_format, text_format

from xtcp2.config import MARSHALLERS as CONFIG_MARSHALLERS, Config
from xtcp2.decode_cmd import decode_file
from xtcp2.errors import ConfigError
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.marshal import BINARY, MARSHALLERS, get_marshaller
from xtcp2.marshal.human import RTT_FIELDS, STATE_NAMES, select_columns
from xtcp2.marshal.protobuf_list import unmarshal
from xtcp2.records.convert import record_to_dict
from xtcp2.records.envelope import EncodedEnvelope

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"
FIELDS = {f.name: f for f in pb.XtcpFlatRecord.DESCRIPTOR.fields}
BY_JSON = {f.json_name: f for f in FIELDS.values()}


@pytest.fixture(scope="module")
def env() -> EncodedEnvelope:
    rows = []
    for name in ("6_6_44/tcp_10_sockets.pcap", "6_6_44/netlink_sock_diag_reply_single_packet_port443v6.pcap"):
        rows += [r for env in decode_file(str(FIX / name)) for r in env.message().row]
    for i, r in enumerate(rows):  # the constants a daemon stamps
        r.netns, r.hostname, r.timestamp_ns = f"ns{i % 3}", "host,with \"quotes\"\tand tab", 1_767_000_000_123_456_789
        r.trigger = pb.XtcpFlatRecord.TRIGGER_CLOSE if i % 2 else pb.XtcpFlatRecord.TRIGGER_POLL
    families = {r.inet_diag_msg_family for r in rows}
    assert families == {2, 10} and any(r.tcp_info_rtt for r in rows)
    return EncodedEnvelope.from_records(rows)


def marshal(name: str, env: EncodedEnvelope, columns: str = "") -> bytes:
    return get_marshaller(name, Config(csv_columns=columns))(env)


def from_dialect(obj: dict) -> pb.XtcpFlatRecord:
    """Our JSON dialect back to a record: text addresses -> bytes, then protojson's parser."""
    obj = {k: v for k, v in obj.items() if not k.endswith("StateName")}
    for key in ("inetDiagMsgSocketSource", "inetDiagMsgSocketDestination"):
        if key in obj:
            obj[key] = base64.b64encode(ipaddress.ip_address(obj[key]).packed).decode()
    return json_format.ParseDict(obj, pb.XtcpFlatRecord())


def test_registry_names_every_format():
    assert set(MARSHALLERS) == {"protobufList", "protoJson", "protoText", "msgpack", "jsonl", "csv", "tsv",
                                "humanize"}
    assert set(CONFIG_MARSHALLERS) == set(MARSHALLERS)
    assert BINARY == {"protobufList", "msgpack"}


@pytest.mark.parametrize("name", ["jsonl", "protoJson"])
def test_json_dialect_round_trips(env, name):
    lines = marshal(name, env).decode().splitlines()
    rows = env.message().row
    assert len(lines) == len(rows)
    for line, rec in zip(lines, rows):
        obj = json.loads(line)
        assert all(k in BY_JSON for k in obj if not k.endswith("StateName"))  # protojson names
        assert isinstance(obj["inetDiagMsgState"], int)             # states stay numbers (ClickHouse UInt32)
        assert obj["inetDiagMsgStateName"] == STATE_NAMES[rec.inet_diag_msg_state]  # ... and have a name
        assert list(obj).index("inetDiagMsgStateName") == list(obj).index("inetDiagMsgState") + 1
        assert isinstance(obj["inetDiagMsgSocketCookie"], int)      # 64-bit: numbers, not quoted
        ipaddress.ip_address(obj["inetDiagMsgSocketSource"])         # text addresses
        assert obj.get("trigger") == ("TRIGGER_CLOSE" if rec.trigger else None)  # enums by name
        assert from_dialect(obj) == rec


def test_decode_and_daemon_write_the_same_json(env, tmp_path):
    path = FIX / "6_6_44" / "tcp_10_sockets.pcap"
    out = subprocess.run([sys.executable, "-m", "xtcp2", "decode", str(path)], capture_output=True, text=True,
                         check=True).stdout
    assert out.encode() == b"".join(marshal("jsonl", e) for e in decode_file(str(path)))


def test_humanize(env):
    lines = marshal("humanize", env).decode().splitlines()
    for line, rec in zip(lines, env.message().row):
        obj = json.loads(line)
        assert obj["inetDiagMsgState"] == STATE_NAMES[rec.inet_diag_msg_state]
        assert ipaddress.ip_address(obj["inetDiagMsgSocketSource"]).packed == rec.inet_diag_msg_socket_source
        if rec.tcp_info_rtt:
            assert obj["tcpInfoRttMs"] == rec.tcp_info_rtt / 1000 and "tcpInfoRtt" not in obj
        assert obj["timestampNs"] == "2025-12-29T09:20:00.123456789Z"
        if rec.congestion_algorithm_enum:
            assert obj["congestionAlgorithmEnum"] == pb.XtcpFlatRecord.CongestionAlgorithm.Name(
                rec.congestion_algorithm_enum).removeprefix("CONGESTION_ALGORITHM_")


@pytest.mark.parametrize("name,delim", [("csv", ","), ("tsv", "\t")])
def test_csv_tsv_read_back_by_the_csv_module(env, name, delim):
    m = get_marshaller(name, Config())
    text = (m(env) + m(env)).decode()  # two envelopes: one header
    table = list(csv.reader(io.StringIO(text), delimiter=delim))
    header, body = table[0], table[1:]
    rows = list(env.message().row)
    assert len(body) == 2 * len(rows)
    assert len(header) == len(FIELDS) and header.count("netns") == 1
    for line, rec in zip(body, rows + rows):
        cell = dict(zip(header, line))
        assert cell["hostname"] == rec.hostname                      # quoting survives , " and tab
        assert cell["inetDiagMsgState"] == STATE_NAMES[rec.inet_diag_msg_state]
        assert float(cell["tcpInfoRttMs"]) == pytest.approx(rec.tcp_info_rtt / 1000, abs=0.0005)
        assert cell["inetDiagMsgSocketCookie"] == str(rec.inet_diag_msg_socket_cookie)
        assert ipaddress.ip_address(cell["inetDiagMsgSocketDestination"]).packed == \
            rec.inet_diag_msg_socket_destination
        assert cell["trigger"] == ("CLOSE" if rec.trigger else "POLL")


def test_columns_choose_and_order_fields(env):
    text = marshal("csv", env, "tcpInfoRtt, netns,inetDiagMsgSocketSourcePort").decode()
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["tcpInfoRttMs", "netns", "inetDiagMsgSocketSourcePort"]
    assert [r[1:] for r in table[1:]] == [[r.netns, str(r.inet_diag_msg_socket_source_port)]
                                          for r in env.message().row]
    with pytest.raises(ConfigError, match="unknown column 'tcp_info_rtt'"):
        select_columns("netns,tcp_info_rtt")
    with pytest.raises(ConfigError, match="columns"):
        Config(csv_columns="nope").validate()


def test_binary_formats_round_trip(env):
    assert [pb.Envelope.FromString(b) for b in unmarshal(marshal("protobufList", env))] == [env.message()]
    assert text_format.Parse(marshal("protoText", env).decode(), pb.Envelope()) == env.message()
    back = msgpack.unpackb(marshal("msgpack", env), raw=False)
    assert back == [record_to_dict(r) for r in env.message().row]


def _run_on_terminal(*argv: str) -> tuple[int, str, str]:
    """Run xtcp2 with stdout on a pseudo-terminal; (exit status, terminal output, stderr)."""
    master, slave = pty.openpty()
    try:
        proc = subprocess.Popen([sys.executable, "-m", "xtcp2", *argv], stdout=slave, stderr=subprocess.PIPE,
                                text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not data:
                break
            chunks.append(data)
        err = proc.stderr.read()
        return proc.wait(timeout=60), b"".join(chunks).decode(errors="replace"), err
    finally:
        os.close(master)


@pytest.mark.root
@pytest.mark.parametrize("fmt", sorted(BINARY))
def test_binary_to_a_terminal_is_refused(fmt):
    rc, out, err = _run_on_terminal("-dest", "stdout", "-marshal", fmt, "--once", "--netns", "self")
    assert rc == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and "stdout is a terminal" in err and "humanize" in err


@pytest.mark.root
def test_text_to_a_terminal_is_fine():
    rc, out, err = _run_on_terminal("-dest", "stdout", "-marshal", "csv", "-columns", "netns,inetDiagMsgState",
                                    "--once", "--netns", "self")
    assert rc == 0, err
    assert out.splitlines()[0].strip() == "netns,inetDiagMsgState"


def test_one_csv_header_per_stream_across_reconfigures(env, tmp_path):
    from xtcp2.pipeline import Emitter
    from xtcp2.records.encode import varint

    out = tmp_path / "out.csv"
    cfg = Config(marshal_to="csv", dest=f"file:{out}", csv_columns="netns,inetDiagMsgState").validate()
    em = Emitter(cfg)
    rows = list(env.message().row)
    one = EncodedEnvelope.from_records(rows[:5])
    ends = []
    pos = 0
    for r in rows[:5]:  # row end offsets inside the Envelope body (tag + length + record)
        n = len(r.SerializeToString())
        pos += 1 + len(varint(n)) + n
        ends.append(pos)
    import numpy as np
    em.add_rows(one.body, np.array(ends))
    em.flush()
    em.configure(cfg.replace(tag="INC-1"))            # another setting: same stream, no new header
    em.add_rows(one.body, np.array(ends))
    em.configure(cfg.replace(csv_columns="netns"))    # other columns: a new table, a new header
    em.add_rows(one.body, np.array(ends))
    em.close()
    lines = out.read_text().splitlines()
    assert lines.count("netns,inetDiagMsgState") == 1 and lines[0] == "netns,inetDiagMsgState"
    assert lines[11] == "netns" and len(lines) == 1 + 10 + 1 + 5


def test_clickhouse_reads_the_json_dialect(env):
    """ClickHouse (chdb) reads jsonl as JSONEachRow: numbers as numbers, text addresses."""
    import chdb

    rows = env.message().row
    data = marshal("jsonl", env).decode()
    assert "$$" not in data
    q = ("SELECT count(), sum(inetDiagMsgSocketCookie), countIf(inetDiagMsgState = 1), "
         "countIf(inetDiagMsgStateName = 'ESTABLISHED'), countIf(isIPv4String(inetDiagMsgSocketSource) "
         "OR isIPv6String(inetDiagMsgSocketSource)), toTypeName(any(inetDiagMsgSocketCookie)) "
         f"FROM format(JSONEachRow, $${data}$$)")
    got = next(csv.reader(io.StringIO(chdb.query(q, "CSV").bytes().decode())))
    est = sum(r.inet_diag_msg_state == 1 for r in rows)
    assert got[:5] == [str(len(rows)), str(sum(r.inet_diag_msg_socket_cookie for r in rows)), str(est), str(est),
                       str(len(rows))]
    assert "Int64" in got[5]
