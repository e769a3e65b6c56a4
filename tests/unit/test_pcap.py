"""pcap reading and writing (link type 253), and the `xtcp2 decode` command's output."""
from __future__ import annotations

import ipaddress
import json
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from google.protobuf import text_format

from xtcp2.errors import DecodeError
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.netlink.pcap import PcapWriter, read_packets
from xtcp2.netlink.replay import decode_packets

from .test_attributes import (DONE, FIXTURES, inet_diag_msg, nlmsg, parse_message, rtattr, sock_diag_packets,
                              socket_messages)

ROOT = Path(__file__).resolve().parents[2]
LINKTYPE_NETLINK = 253
ARPHRD_NETLINK = 0x0338
NETLINK_ROUTE, NETLINK_SOCK_DIAG = 0, 4
FIELDS = {f.name: f for f in pb.XtcpFlatRecord.DESCRIPTOR.fields}


def pcap_bytes(packets: list[tuple[int, bytes]], endian: str = "<", magic: int = 0xA1B2C3D4,
               linktype: int = LINKTYPE_NETLINK, frac_per_sec: int = 1_000_000) -> bytes:
    """A pcap file written by hand: (protocol, netlink bytes) per packet, timestamps 1.5 s apart."""
    out = struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, 65535, linktype)
    for i, (proto, payload) in enumerate(packets):
        cooked = struct.pack(">HH10xH", 0, ARPHRD_NETLINK, proto)
        out += struct.pack(endian + "IIII", 1000 + i, frac_per_sec // 2, len(payload) + 16, len(payload) + 16)
        out += cooked + payload
    return out


def socket_message(sport: int, state: int = 1) -> bytes:
    return nlmsg(inet_diag_msg(state=state, sport=sport) + rtattr(5, b"\x02"))


# --- writer ---------------------------------------------------------------------

def test_writer_round_trip(tmp_path: Path):
    path = tmp_path / "c.pcap"
    w = PcapWriter(str(path))
    payloads = [b"\x01\x02\x03\x04" * 5, socket_message(4000) + DONE, b"", bytes(range(256)) * 10]
    before = time.time_ns()
    for i, p in enumerate(payloads):
        w.write(p, outgoing=(i == 0))
    w.close()
    after = time.time_ns()
    assert w.packets == len(payloads)
    got = list(read_packets(str(path)))
    assert [p for _, p in got] == payloads
    for ts, _ in got:  # microsecond resolution
        assert before // 1000 * 1000 <= ts <= after
    raw = path.read_bytes()
    magic, major, minor, _, _, snaplen, linktype = struct.unpack_from("<IHHiIII", raw)
    assert (magic, major, minor, linktype) == (0xA1B2C3D4, 2, 4, LINKTYPE_NETLINK) and snaplen >= 65535
    first_cooked = raw[24 + 16:24 + 32]
    assert first_cooked == (FIXTURES / "6_6_44" / "netlink_cooked_header").read_bytes(), \
        "outgoing cooked header differs from the one nlmon writes"
    second = 24 + 16 + 16 + len(payloads[0])
    pkttype, arphrd = struct.unpack_from(">HH", raw, second + 16)
    proto = struct.unpack_from(">H", raw, second + 16 + 14)[0]
    assert (pkttype, arphrd, proto) == (0, ARPHRD_NETLINK, NETLINK_SOCK_DIAG)


def test_writer_output_decodes_like_the_fixture(tmp_path: Path):
    """Re-writing a fixture's packets gives a file that decodes to the same records."""
    src = FIXTURES / "6_6_44" / "ss_tcp_info_a_4.pcap"
    packets = [p for _, p in read_packets(str(src))]
    path = tmp_path / "copy.pcap"
    w = PcapWriter(str(path))
    for p in packets:
        w(p)
    w.close()
    a = decode_packets(packets)
    b = decode_packets(p for _, p in read_packets(str(path)))
    assert a.n == b.n == 15
    assert (a["inet_diag_msg_socket_cookie"] == b["inet_diag_msg_socket_cookie"]).all()
    assert (a["tcp_info_rtt"] == b["tcp_info_rtt"]).all()


# --- reader -----------------------------------------------------------------------

@pytest.mark.parametrize("endian,magic,per_sec,unit_ns", [
    ("<", 0xA1B2C3D4, 1_000_000, 1000), (">", 0xA1B2C3D4, 1_000_000, 1000),
    ("<", 0xA1B23C4D, 1_000_000_000, 1), (">", 0xA1B23C4D, 1_000_000_000, 1)])
def test_reader_byte_orders_and_resolutions(tmp_path: Path, endian, magic, per_sec, unit_ns):
    payload = socket_message(4001) + DONE
    path = tmp_path / "x.pcap"
    path.write_bytes(pcap_bytes([(NETLINK_SOCK_DIAG, payload)] * 2, endian, magic, frac_per_sec=per_sec))
    got = list(read_packets(str(path)))
    assert [p for _, p in got] == [payload, payload]
    assert [ts for ts, _ in got] == [1000 * 10**9 + per_sec // 2 * unit_ns, 1001 * 10**9 + per_sec // 2 * unit_ns]


def _corruptions() -> dict[str, tuple[bytes, str]]:
    good = pcap_bytes([(NETLINK_SOCK_DIAG, socket_message(4000) + DONE)])
    return {
        "empty": (b"", "not a pcap file"),
        "short": (good[:10], "not a pcap file"),
        "zeros": (bytes(4096), "not a pcap file"),
        "pcapng": (b"\x0a\x0d\x0d\x0a" + bytes(60), "not a pcap file"),
        "text": (b"State  Recv-Q Send-Q Local Address:Port\n" * 4, "not a pcap file"),
        "ethernet": (pcap_bytes([(NETLINK_SOCK_DIAG, b"")], linktype=1), "link type 1"),
        "record header cut": (good[:24 + 7], "header truncated"),
        "packet cut": (good[:-5], "truncated"),
        "shorter than cooked": (good[:24] + struct.pack("<IIII", 1, 0, 8, 8) + bytes(8), "cooked header"),
        "huge incl_len": (good[:24] + struct.pack("<IIII", 1, 0, 0xFFFFFFF0, 16) + bytes(16), "truncated"),
    }


@pytest.mark.parametrize("name", list(_corruptions()))
def test_reader_rejects_corrupt_files(tmp_path: Path, name: str):
    data, words = _corruptions()[name]
    path = tmp_path / "bad.pcap"
    path.write_bytes(data)
    with pytest.raises(DecodeError) as err:
        list(read_packets(str(path)))
    msg = str(err.value)
    assert words in msg and str(path) in msg and "\n" not in msg


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_reader_unreadable_path(tmp_path: Path, kind: str):
    path = tmp_path / "nope.pcap" if kind == "missing" else tmp_path
    with pytest.raises(DecodeError) as err:
        list(read_packets(str(path)))
    assert str(path) in str(err.value)


def test_only_sock_diag_packets_are_decoded(tmp_path: Path):
    """Packets whose cooked header names another netlink protocol are not socket replies."""
    # an rtnetlink packet whose message type happens to be 20 (RTM_NEWADDR == SOCK_DIAG_BY_FAMILY)
    path = tmp_path / "mixed.pcap"
    path.write_bytes(pcap_bytes([(NETLINK_SOCK_DIAG, socket_message(4000) + DONE),
                                 (NETLINK_ROUTE, socket_message(9999, state=24) + DONE)]))
    cols = decode_packets(p for _, p in read_packets(str(path)))
    assert cols.n == 1 and cols["inet_diag_msg_socket_source_port"].tolist() == [4000]
    # the same in real captures: nlmon recorded `ip`'s address dump next to ss's
    for name in ("tcp_100_sockets_bbr.pcap", "tcp_100_sockets_vegas.pcap"):
        fixture = FIXTURES / "6_6_44" / name
        cols = decode_packets(p for _, p in read_packets(str(fixture)))
        assert cols.n == len(socket_messages(sock_diag_packets(fixture)))
        assert set(cols["inet_diag_msg_state"].tolist()) <= set(range(1, 13))


# --- `xtcp2 decode` -----------------------------------------------------------------

def run_decode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtcp2", "decode", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)


from xtcp2.records.convert import STATE_NAMES  # noqa: E402

JSON_NAMES = {f.json_name: f.name for f in FIELDS.values()}
JSONL_CAPTURES = ["6_6_44/tcp_10_sockets.pcap", "6_6_44/netlink_sock_diag_reply_single_packet_port443v6.pcap",
                  "5_4_281/netlink_sock_diag_reply_single_packet_port4049.pcap"]


@pytest.mark.parametrize("name", JSONL_CAPTURES)
def test_decode_jsonl(name: str):
    path = FIXTURES / name
    proc = run_decode(str(path))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    msgs = socket_messages(sock_diag_packets(path))
    assert len(lines) == len(msgs) > 0
    families = set()
    for line, (pkt, off) in zip(lines, msgs):
        obj = json.loads(line)
        want = parse_message(pkt, off)
        assert obj.pop("inetDiagMsgStateName") == STATE_NAMES[obj["inetDiagMsgState"]]
        obj.pop("tcpInfoStateName", None)
        for key, value in obj.items():
            assert re.fullmatch(r"[a-z][a-zA-Z0-9]*", key) and key in JSON_NAMES, key  # protojson names (README)
            assert value not in (0, "", None, False), f"unset field {key} printed"
        obj = {JSON_NAMES[k]: v for k, v in obj.items()}
        for key in ("inet_diag_msg_socket_source", "inet_diag_msg_socket_destination"):
            text = obj[key]
            assert isinstance(text, str)
            assert ipaddress.ip_address(text).packed == want[key]
            assert ("." in text) == (len(want[key]) == 4)
        for key, value in want.items():
            if key in ("inet_diag_msg_socket_source", "inet_diag_msg_socket_destination"):
                continue
            if key == "congestion_algorithm_string":
                assert obj.get(key) == value.decode()
            elif key == "congestion_algorithm_enum":
                enum = FIELDS[key].enum_type
                assert obj.get(key) == (enum.values_by_number[value].name if value else None)
            else:
                assert obj.get(key, 0) == value, key
        families.add(obj["inet_diag_msg_family"])
    assert families
    if "port443v6" in name:
        assert families == {10}


def test_decode_proto_json_and_text():
    path = FIXTURES / "6_6_44" / "ss_tcp_info_a_4.pcap"
    pj = run_decode("--format", "protoJson", str(path))
    assert pj.returncode == 0, pj.stderr
    objs = [json.loads(x) for x in pj.stdout.splitlines()]
    assert len(objs) == 15
    assert all("inetDiagMsgSocketCookie" in o and "inet_diag_msg_socket_cookie" not in o for o in objs)
    pt = run_decode("--format", "protoText", str(path))
    assert pt.returncode == 0, pt.stderr
    env = text_format.Parse(pt.stdout, pb.Envelope())
    assert len(env.row) == 15
    assert sorted(r.inet_diag_msg_socket_cookie for r in env.row) == sorted(int(o["inetDiagMsgSocketCookie"])
                                                                           for o in objs)


@pytest.mark.parametrize("name", ["6_6_44/netlink_sock_diag_request_single_packet_v6.pcap",
                                  "6_6_44/netlink_sock_diag_response_dump_done.pcap"])
def test_decode_capture_without_sockets(name: str):
    proc = run_decode(str(FIXTURES / name))
    assert proc.returncode == 0 and proc.stdout == "", proc.stderr


def test_decode_missing_file_and_bad_format(tmp_path: Path):
    proc = run_decode(str(tmp_path / "missing.pcap"))
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stderr and "missing.pcap" in proc.stderr
    proc = run_decode("--format", "yaml", str(FIXTURES / "6_6_44" / "tcp_10_sockets.pcap"))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_decode_cli_on_damaged_netlink(tmp_path: Path):
    """Valid pcap framing, but a message whose nlmsg_len runs past its packet."""
    msg = bytearray(socket_message(4000))
    struct.pack_into("<I", msg, 0, len(msg) + 64)
    path = tmp_path / "damaged.pcap"
    path.write_bytes(pcap_bytes([(NETLINK_SOCK_DIAG, bytes(msg))]))
    proc = run_decode(str(path))
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert "nlmsg_len" in proc.stderr
