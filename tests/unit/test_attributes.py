"""Attribute decoding checked against the kernel's struct layouts, written out here.

Expected values come from struct.unpack over the C declarations in include/uapi/linux
(tcp.h, inet_diag.h), transcribed below field by field; they do not use
xtcp2.netlink.layouts. Each attribute_* fixture is a whole rtattr (header + payload);
the tests wrap it in nlmsghdr + inet_diag_msg, decode with the replay decoder and
compare every field of the record.
"""
from __future__ import annotations

import ipaddress
import random
import struct
from pathlib import Path

import numpy as np
import pytest

from xtcp2.netlink.pcap import read_packets
from xtcp2.netlink.replay import decode_packets

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "netlink"

AF_INET, AF_INET6 = 2, 10
NLMSG_DONE, SOCK_DIAG_BY_FAMILY = 3, 20
NLM_F_MULTI = 0x02
NETLINK_SOCK_DIAG = 4

# rtattr types (include/uapi/linux/inet_diag.h)
MEMINFO, INFO, VEGASINFO, CONG, TOS, TCLASS, SKMEMINFO, SHUTDOWN = 1, 2, 3, 4, 5, 6, 7, 8
DCTCPINFO, PROTOCOL, SKV6ONLY, MARK, BBRINFO, CLASS_ID, CGROUP_ID, SOCKOPT = 9, 10, 11, 15, 16, 17, 21, 22


def sequential(decls: list[tuple[str | None, str]]) -> list[tuple[str | None, int, str]]:
    """C struct members in order -> (proto field, offset, struct code); natural alignment."""
    out, off = [], 0
    for name, code in decls:
        size = struct.calcsize("<" + code)
        off = (off + size - 1) // size * size
        out.append((name, off, code))
        off += size
    return out


# struct tcp_info, include/uapi/linux/tcp.h (7.0 adds AccECN counters after total_rto_time;
# the schema has no columns for them)
TCP_INFO = sequential([
    ("tcp_info_state", "B"), ("tcp_info_ca_state", "B"), ("tcp_info_retransmits", "B"),
    ("tcp_info_probes", "B"), ("tcp_info_backoff", "B"), ("tcp_info_options", "B"),
    (None, "B"),  # tcpi_snd_wscale : 4, tcpi_rcv_wscale : 4
    (None, "B"),  # tcpi_delivery_rate_app_limited:1, tcpi_fastopen_client_fail:2
    ("tcp_info_rto", "I"), ("tcp_info_ato", "I"), ("tcp_info_snd_mss", "I"), ("tcp_info_rcv_mss", "I"),
    ("tcp_info_unacked", "I"), ("tcp_info_sacked", "I"), ("tcp_info_lost", "I"), ("tcp_info_retrans", "I"),
    ("tcp_info_fackets", "I"),
    ("tcp_info_last_data_sent", "I"), ("tcp_info_last_ack_sent", "I"), ("tcp_info_last_data_recv", "I"),
    ("tcp_info_last_ack_recv", "I"),
    ("tcp_info_pmtu", "I"), ("tcp_info_rcv_ssthresh", "I"), ("tcp_info_rtt", "I"), ("tcp_info_rtt_var", "I"),
    ("tcp_info_snd_ssthresh", "I"), ("tcp_info_snd_cwnd", "I"), ("tcp_info_adv_mss", "I"),
    ("tcp_info_reordering", "I"),
    ("tcp_info_rcv_rtt", "I"), ("tcp_info_rcv_space", "I"),
    ("tcp_info_total_retrans", "I"),
    ("tcp_info_pacing_rate", "Q"), ("tcp_info_max_pacing_rate", "Q"), ("tcp_info_bytes_acked", "Q"),
    ("tcp_info_bytes_received", "Q"), ("tcp_info_segs_out", "I"), ("tcp_info_segs_in", "I"),
    ("tcp_info_not_sent_bytes", "I"), ("tcp_info_min_rtt", "I"), ("tcp_info_data_segs_in", "I"),
    ("tcp_info_data_segs_out", "I"),
    ("tcp_info_delivery_rate", "Q"),
    ("tcp_info_busy_time", "Q"), ("tcp_info_rwnd_limited", "Q"), ("tcp_info_sndbuf_limited", "Q"),
    ("tcp_info_delivered", "I"), ("tcp_info_delivered_ce", "I"),
    ("tcp_info_bytes_sent", "Q"), ("tcp_info_bytes_retrans", "Q"), ("tcp_info_dsack_dups", "I"),
    ("tcp_info_reord_seen", "I"),
    ("tcp_info_rcv_ooopack", "I"),
    ("tcp_info_snd_wnd", "I"), ("tcp_info_rcv_wnd", "I"),
    ("tcp_info_rehash", "I"),
    ("tcp_info_total_rto", "H"), ("tcp_info_total_rto_recoveries", "H"), ("tcp_info_total_rto_time", "I"),
])
TCP_INFO_BITS = ["tcp_info_send_scale", "tcp_info_rcv_scale", "tcp_info_delivery_rate_app_limited",
                 "tcp_info_fast_open_client_failed"]
TCP_INFO_NAMES = {f for f, _, _ in TCP_INFO if f} | set(TCP_INFO_BITS)

LAYOUTS = {
    # struct inet_diag_meminfo
    MEMINFO: sequential([("mem_info_rmem", "I"), ("mem_info_wmem", "I"), ("mem_info_fmem", "I"),
                         ("mem_info_tmem", "I")]),
    INFO: TCP_INFO,
    # struct tcpvegas_info
    VEGASINFO: sequential([("vegas_info_enabled", "I"), ("vegas_info_rtt_cnt", "I"), ("vegas_info_rtt", "I"),
                           ("vegas_info_min_rtt", "I")]),
    TOS: sequential([("type_of_service", "B")]),
    TCLASS: sequential([("traffic_class", "B")]),
    # u32 array indexed by SK_MEMINFO_RMEM_ALLOC .. SK_MEMINFO_DROPS
    SKMEMINFO: sequential([("sk_mem_info_rmem_alloc", "I"), ("sk_mem_info_rcv_buf", "I"),
                           ("sk_mem_info_wmem_alloc", "I"), ("sk_mem_info_snd_buf", "I"),
                           ("sk_mem_info_fwd_alloc", "I"), ("sk_mem_info_wmem_queued", "I"),
                           ("sk_mem_info_optmem", "I"), ("sk_mem_info_backlog", "I"), ("sk_mem_info_drops", "I")]),
    SHUTDOWN: sequential([("shutdown_state", "B")]),
    # struct tcp_dctcp_info
    DCTCPINFO: sequential([("dctcp_info_enabled", "H"), ("dctcp_info_ce_state", "H"), ("dctcp_info_alpha", "I"),
                           ("dctcp_info_ab_ecn", "I"), ("dctcp_info_ab_tot", "I")]),
    # struct tcp_bbr_info
    BBRINFO: sequential([("bbr_info_bw_lo", "I"), ("bbr_info_bw_hi", "I"), ("bbr_info_min_rtt", "I"),
                         ("bbr_info_pacing_gain", "I"), ("bbr_info_cwnd_gain", "I")]),
    CLASS_ID: sequential([("class_id", "I")]),
    CGROUP_ID: sequential([("c_group", "Q")]),
    # struct inet_diag_sockopt: 16 one-bit flags in two bytes
    SOCKOPT: sequential([("sock_opt", "H")]),
}
ATTR_FIELDS = {t: {f for f, _, _ in fields if f} for t, fields in LAYOUTS.items()}
ATTR_FIELDS[INFO] = TCP_INFO_NAMES
ATTR_FIELDS[CONG] = {"congestion_algorithm_string", "congestion_algorithm_enum"}
CONG_ENUM = {b"cubic": 1, b"dctcp": 2, b"vegas": 3, b"prague": 4, b"bbr": 5, b"bbr1": 5, b"bbr2": 6, b"bbr3": 7}
TCP_CA_NAME_MAX = 16
BYTES_FIELDS = {"inet_diag_msg_socket_source", "inet_diag_msg_socket_destination", "congestion_algorithm_string"}


# --- building and parsing messages independently of xtcp2 --------------------

def inet_diag_msg(family=AF_INET, state=1, timer=0, retrans=0, sport=4000, dport=50000, src=None, dst=None,
                  ifindex=0, cookie=0x1234, expires=0, rqueue=0, wqueue=0, uid=1000, inode=777) -> bytes:
    alen = 4 if family == AF_INET else 16
    src = src if src is not None else (b"\x7f\x00\x00\x01" if alen == 4 else ipaddress.IPv6Address("::1").packed)
    dst = dst if dst is not None else src
    return (struct.pack("<4B", family, state, timer, retrans) + struct.pack(">HH", sport, dport)
            + src.ljust(16, b"\0") + dst.ljust(16, b"\0")
            + struct.pack("<IQIIIII", ifindex, cookie, expires, rqueue, wqueue, uid, inode))


def rtattr(kind: int, payload: bytes, pad: bytes = b"\0") -> bytes:
    ln = 4 + len(payload)
    return struct.pack("<HH", ln, kind) + payload + pad * ((-ln) % 4)


def nlmsg(payload: bytes, kind: int = SOCK_DIAG_BY_FAMILY, flags: int = NLM_F_MULTI, seq: int = 1) -> bytes:
    return struct.pack("<IHHII", 16 + len(payload), kind, flags, seq, 0) + payload


def align4(b: bytes, fill: bytes = b"\0") -> bytes:
    return b + fill * ((-len(b)) % 4)


DONE = nlmsg(struct.pack("<i", 0), NLMSG_DONE)


def unpack_fields(payload: bytes, fields) -> dict:
    """Every field that fits entirely in payload."""
    out = {}
    for name, off, code in fields:
        if name and off + struct.calcsize("<" + code) <= len(payload):
            out[name] = struct.unpack_from("<" + code, payload, off)[0]
    return out


def expected_attr(kind: int, payload: bytes) -> dict:
    """The record fields an attribute of this type and payload must produce."""
    if kind == CONG:
        name = payload[:TCP_CA_NAME_MAX].split(b"\0", 1)[0]
        return {"congestion_algorithm_string": name, "congestion_algorithm_enum": CONG_ENUM.get(name, 0)}
    if kind not in LAYOUTS:
        return {}
    out = unpack_fields(payload, LAYOUTS[kind])
    if kind == INFO and len(payload) >= 8:
        b6, b7 = payload[6], payload[7]
        out.update({"tcp_info_send_scale": b6 & 0x0F, "tcp_info_rcv_scale": b6 >> 4,
                    "tcp_info_delivery_rate_app_limited": b7 & 1,
                    "tcp_info_fast_open_client_failed": (b7 >> 1) & 3})
    return out


def parse_message(buf: bytes, off: int = 0) -> dict:
    """One SOCK_DIAG_BY_FAMILY message -> expected record fields (independent parser)."""
    ln = struct.unpack_from("<I", buf, off)[0]
    body = off + 16
    fam, state, timer, retrans = struct.unpack_from("<4B", buf, body)
    sport, dport = struct.unpack_from(">HH", buf, body + 4)
    ifindex, cookie, expires, rq, wq, uid, inode = struct.unpack_from("<IQ5I", buf, body + 40)
    alen = 16 if fam == AF_INET6 else 4
    rec = {
        "inet_diag_msg_family": fam, "inet_diag_msg_state": state, "inet_diag_msg_timer": timer,
        "inet_diag_msg_retrans": retrans, "inet_diag_msg_socket_source_port": sport,
        "inet_diag_msg_socket_destination_port": dport,
        "inet_diag_msg_socket_source": bytes(buf[body + 8:body + 8 + alen]),
        "inet_diag_msg_socket_destination": bytes(buf[body + 24:body + 24 + alen]),
        "inet_diag_msg_socket_interface": ifindex, "inet_diag_msg_socket_cookie": cookie,
        "inet_diag_msg_expires": expires, "inet_diag_msg_rqueue": rq, "inet_diag_msg_wqueue": wq,
        "inet_diag_msg_uid": uid, "inet_diag_msg_inode": inode,
    }
    pos, end = body + 72, off + ln
    while pos + 4 <= end:
        rl, rt = struct.unpack_from("<HH", buf, pos)
        if rl < 4 or pos + rl > end:
            break
        rec.update(expected_attr(rt & 0x3FFF, bytes(buf[pos + 4:pos + rl])))
        pos += (rl + 3) & ~3
    return rec


def row_values(cols: dict, i: int) -> dict:
    """Decoded record i as plain python values; unset numeric fields are left out."""
    out = {}
    for name, col in cols.items():
        if name in BYTES_FIELDS:
            v = col.value(i)
            if v:
                out[name] = v
        else:
            v = int(col[i])
            if v:
                out[name] = v
    return out


def assert_record(cols: dict, i: int, expected: dict, where: str = "") -> None:
    want = {k: v for k, v in expected.items() if v not in (0, b"")}
    got = row_values(cols, i)
    diff = {k: (want.get(k), got.get(k)) for k in set(want) | set(got) if want.get(k) != got.get(k)}
    assert not diff, f"{where}: field (expected, decoded): {diff}"


def decode_one(message: bytes) -> dict:
    cols = decode_packets([message + DONE])
    assert cols.n == 1
    return cols


# --- attribute_* fixtures ------------------------------------------------------

ATTRIBUTE_FILES = sorted(FIXTURES.glob("*/attribute_*"))


def rel(p: Path) -> str:
    return str(p.relative_to(FIXTURES))


def test_attribute_fixtures_present():
    names = {p.name for p in ATTRIBUTE_FILES}
    assert len(ATTRIBUTE_FILES) >= 25
    for want in ("attribute_info", "attribute_cong", "attribute_bbrinfo", "attribute_dctcpinfo",
                 "attribute_vegasinfo", "attribute_skmeminfo", "attribute_meminfo", "attribute_sockopt",
                 "attribute_cgroup_id", "attribute_class_id", "attribute_tos", "attribute_tcclass",
                 "attribute_shutdown"):
        assert want in names


@pytest.mark.parametrize("path", ATTRIBUTE_FILES, ids=[rel(p) for p in ATTRIBUTE_FILES])
def test_attribute_fixture_decodes(path: Path):
    raw = path.read_bytes()
    rta_len, kind = struct.unpack_from("<HH", raw)
    assert rta_len == len(raw), "fixture is one whole rtattr"
    payload = raw[4:]
    expected = expected_attr(kind, payload)
    assert expected, f"type {kind} has no layout here"
    msg = inet_diag_msg(family=AF_INET6, state=1, sport=4001, dport=40001, cookie=0xDEADBEEF00C0FFEE,
                        uid=1000, inode=4242)
    cols = decode_one(nlmsg(msg + align4(raw)))
    rec = parse_message(nlmsg(msg + align4(raw)))
    assert {k: v for k, v in rec.items() if k in expected} == expected
    assert_record(cols, 0, rec, rel(path))


# A few values read by hand from the fixture bytes (and from their names), so the
# transcribed layouts above are anchored too.
HAND_READ = {
    "6_6_44/attribute_cong": {"congestion_algorithm_string": b"cubic", "congestion_algorithm_enum": 1},
    "6_6_44/attribute_cong_bbr": {"congestion_algorithm_string": b"bbr", "congestion_algorithm_enum": 5},
    "6_6_44/attribute_cong_dctcp": {"congestion_algorithm_string": b"dctcp", "congestion_algorithm_enum": 2},
    "6_6_44/attribute_cong_vegas": {"congestion_algorithm_string": b"vegas", "congestion_algorithm_enum": 3},
    "6_6_44/attribute_tos2": {"type_of_service": 2},
    "6_6_44/attribute_tcclass": {"traffic_class": 2},
    "6_6_44/attribute_sockopt": {"sock_opt": 0x52},
    "6_6_44/attribute_cgroup_id": {"c_group": 0x1102},
    "6_6_44/attribute_vegasinfo": {"vegas_info_enabled": 1, "vegas_info_rtt": 211, "vegas_info_min_rtt": 0x7FFFFFFF},
    "6_6_44/attribute_dctcpinfo": {"dctcp_info_enabled": 1, "dctcp_info_alpha": 654, "dctcp_info_ab_tot": 32768},
    "6_6_44/attribute_bbrinfo": {"bbr_info_bw_lo": 0x61A7F9E5, "bbr_info_min_rtt": 20, "bbr_info_pacing_gain": 739,
                                 "bbr_info_cwnd_gain": 739},
    "6_6_44/attribute_skmeminfo": {"sk_mem_info_rcv_buf": 1_000_000, "sk_mem_info_snd_buf": 2_626_560},
    "5_4_281/attribute_skmeminfo_send2626560_forward4096": {"sk_mem_info_snd_buf": 2_626_560,
                                                            "sk_mem_info_fwd_alloc": 4096},
    "6_6_44/attribute_info": {"tcp_info_state": 1, "tcp_info_options": 0x1F, "tcp_info_send_scale": 9,
                              "tcp_info_rcv_scale": 9, "tcp_info_rto": 201_000, "tcp_info_ato": 40_000,
                              "tcp_info_snd_mss": 32768},
    "6_1_103/attribute_info": {"tcp_info_state": 10},
}


@pytest.mark.parametrize("name,values", sorted(HAND_READ.items()))
def test_attribute_hand_read_values(name: str, values: dict):
    raw = (FIXTURES / name).read_bytes()
    cols = decode_one(nlmsg(inet_diag_msg() + align4(raw)))
    got = row_values(cols, 0)
    assert {k: got.get(k, 0) for k in values} == values


# --- tcp_info of every length a kernel sends ---------------------------------

def tcp_info_payload(length: int, seed: int = 7) -> bytes:
    """Random bytes (no zero byte, so every field has a visible value) of one length."""
    rnd = random.Random(seed)
    return bytes(rnd.randrange(1, 255) for _ in range(length))


SENTINEL = rtattr(MARK, b"\xff" * 64)  # an attribute the schema ignores, all ones


@pytest.mark.parametrize("length", [224, 232, 240, 248, 280])
def test_tcp_info_kernel_lengths(length: int):
    payload = tcp_info_payload(length)
    msg = nlmsg(inet_diag_msg() + rtattr(INFO, payload, pad=b"\xff") + SENTINEL)
    cols = decode_one(msg)
    want = expected_attr(INFO, payload)
    sent = {f for f, off, code in TCP_INFO if f and off + struct.calcsize("<" + code) <= length}
    assert sent <= set(want)
    for name in TCP_INFO_NAMES:
        got = int(cols[name][0]) if name in cols else 0
        if name in want:
            assert got == want[name], name
        else:  # a field this kernel did not send stays unset, never taken from what follows
            assert got == 0, f"{name} decoded from beyond the attribute: {got:#x}"
    # the newest fields exist exactly from their kernel on
    assert ("tcp_info_rcv_ooopack" in want) == (length >= 228)
    assert ("tcp_info_rehash" in want) == (length >= 240)
    assert ("tcp_info_total_rto_time" in want) == (length >= 248)


@pytest.mark.parametrize("length", [1, 4, 7, 8, 9, 12, 103, 104, 111, 112, 225, 226, 230, 233, 246, 247])
def test_tcp_info_odd_lengths_never_read_past(length: int):
    payload = tcp_info_payload(length, seed=length)
    msg = nlmsg(inet_diag_msg() + rtattr(INFO, payload, pad=b"\xff") + SENTINEL)
    cols = decode_one(msg)
    want = expected_attr(INFO, payload)
    for name in TCP_INFO_NAMES:
        got = int(cols[name][0]) if name in cols else 0
        if name in want:
            assert got == want[name], name
        else:
            assert got == 0, f"length {length}: {name} = {got:#x} read past the attribute"


def test_tcp_info_mixed_lengths_in_one_batch():
    lengths = [224, 280, 232, 248, 240, 232, 100, 224]
    msgs, expected = b"", []
    for i, ln in enumerate(lengths):
        payload = tcp_info_payload(ln, seed=i)
        payload = bytes([1]) + payload[1:]  # a valid state byte
        body = inet_diag_msg(sport=5000 + i, cookie=i + 1) + rtattr(INFO, payload, pad=b"\xff") + SENTINEL
        m = nlmsg(body, seq=i)
        msgs += m
        expected.append(parse_message(m))
    cols = decode_packets([msgs + DONE])
    assert cols.n == len(lengths)
    for i in range(len(lengths)):
        assert_record(cols, i, expected[i], f"message {i} (tcp_info {lengths[i]} bytes)")


# --- whole messages and every captured message --------------------------------

WHOLE_MESSAGES = sorted([*FIXTURES.glob("*/netlink_sock_diag_response_port*"),
                         *FIXTURES.glob("*/large_netlink_sock_diag_protocol_export")])


@pytest.mark.parametrize("path", WHOLE_MESSAGES, ids=[rel(p) for p in WHOLE_MESSAGES])
def test_whole_message_fixture(path: Path):
    raw = path.read_bytes()
    ln, kind = struct.unpack_from("<IH", raw)
    assert ln == len(raw) and kind == SOCK_DIAG_BY_FAMILY
    cols = decode_one(raw)
    rec = parse_message(raw)
    assert rec.get("tcp_info_state") == rec["inet_diag_msg_state"]
    assert_record(cols, 0, rec, rel(path))


def sock_diag_packets(path: Path) -> list[bytes]:
    """The NETLINK_SOCK_DIAG packets of a capture, by the cooked header (independent pcap reader)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    assert magic == 0xA1B2C3D4, "fixtures are little-endian microsecond pcaps"
    off, out = 24, []
    while off < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        off += 16
        pkt = data[off:off + incl]
        if struct.unpack_from(">H", pkt, 14)[0] == NETLINK_SOCK_DIAG:
            out.append(pkt[16:])
        off += incl
    return out


def socket_messages(packets: list[bytes]) -> list[tuple[bytes, int]]:
    out = []
    for p in packets:
        off = 0
        while off + 16 <= len(p):
            ln, kind, flags = struct.unpack_from("<IHH", p, off)
            if kind == SOCK_DIAG_BY_FAMILY and not flags & 1:
                out.append((p, off))
            off += (ln + 3) & ~3
    return out


CAPTURES = sorted(p for p in FIXTURES.glob("*/*.pcap") if any(p.read_bytes()[:4]))


@pytest.mark.parametrize("path", CAPTURES, ids=[rel(p) for p in CAPTURES])
def test_every_captured_message_field_by_field(path: Path):
    packets = sock_diag_packets(path)
    msgs = socket_messages(packets)
    cols = decode_packets(packets)
    assert cols.n == len(msgs)
    for i, (pkt, off) in enumerate(msgs):
        assert_record(cols, i, parse_message(pkt, off), f"{rel(path)} message {i}")
    if msgs:
        assert np.all(cols["inet_diag_msg_family"] == np.where(
            np.array([len(cols["inet_diag_msg_socket_source"].value(i)) for i in range(len(msgs))]) == 16,
            AF_INET6, AF_INET))


def test_captures_cover_every_kernel_struct_size():
    """The captures carry tcp_info of 232 (5.4-6.1) and 240 (6.6) bytes."""
    seen = set()
    for path in CAPTURES:
        for pkt, off in socket_messages(sock_diag_packets(path))[:50]:
            ln = struct.unpack_from("<I", pkt, off)[0]
            pos = off + 16 + 72
            while pos + 4 <= off + ln:
                rl, rt = struct.unpack_from("<HH", pkt, pos)
                if rt == INFO:
                    seen.add(rl - 4)
                pos += (rl + 3) & ~3
    assert {232, 240} <= seen


def test_read_packets_agrees_with_independent_reader():
    for path in CAPTURES:
        mine = [p for _, p in read_packets(str(path))]
        sock_diag = sock_diag_packets(path)
        assert set(sock_diag) <= set(mine)


@pytest.mark.parametrize("wanted", [frozenset({INFO}), frozenset({CONG, SKMEMINFO}), frozenset()])
def test_wanted_restricts_decoded_attributes(wanted):
    path = FIXTURES / "6_6_44" / "tcp_100_sockets_dctcp.pcap"
    packets = sock_diag_packets(path)
    msgs = socket_messages(packets)[:300]
    full = decode_packets(packets)
    part = decode_packets(packets, wanted=wanted)
    allowed = set().union(*(ATTR_FIELDS[t] for t in wanted)) if wanted else set()
    schema = set().union(*ATTR_FIELDS.values())
    assert part.n == full.n == len(socket_messages(packets))
    for name in part:
        if name in schema:
            assert name in allowed, f"{name} decoded although its attribute was not wanted"
    for i in range(len(msgs)):
        want = {k: v for k, v in parse_message(*msgs[i]).items() if k not in schema or k in allowed}
        assert_record(part, i, want, f"message {i}")
