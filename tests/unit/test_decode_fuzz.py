"""Property tests: damaged netlink data never escapes the decoder as anything but DecodeError.

Inputs are real captured replies (tests/fixtures) cut, flipped and re-framed by
hypothesis, plus generated messages whose attributes are short or lying about their
length and are followed by all-ones sentinel bytes: a value that shows up from those
bytes was read outside its attribute.
"""
from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from xtcp2.errors import DecodeError
from xtcp2.columns import BytesColumn
from xtcp2.netlink.decode import decode_messages
from xtcp2.netlink.pcap import read_packets
from xtcp2.netlink.replay import decode_packets

from .test_attributes import (ATTR_FIELDS, BBRINFO, CGROUP_ID, CLASS_ID, CONG, DCTCPINFO, DONE, FIXTURES, INFO,
                              LAYOUTS, MARK, MEMINFO, PROTOCOL, SHUTDOWN, SKMEMINFO, SOCKOPT, TCLASS, TOS,
                              VEGASINFO, align4, assert_record, expected_attr, inet_diag_msg, nlmsg, parse_message,
                              row_values, rtattr)

# XTCP2_FUZZ_EXAMPLES raises the budget for a long local run; CI keeps the suite fast.
FUZZ = settings(max_examples=int(os.environ.get("XTCP2_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow])
SOURCE = FIXTURES / "6_6_44" / "ss_tcp_info_a_4.pcap"
BASE_PACKETS = [p for _, p in read_packets(str(SOURCE))]
REPLIES = [p for p in BASE_PACKETS if len(p) > 200]
PCAP = SOURCE.read_bytes()
ALL_SCHEMA_FIELDS = set().union(*ATTR_FIELDS.values())
TYPES = [MEMINFO, INFO, VEGASINFO, CONG, TOS, TCLASS, SKMEMINFO, SHUTDOWN, DCTCPINFO, PROTOCOL, MARK, BBRINFO,
         CLASS_ID, CGROUP_ID, SOCKOPT, 12, 31, 0x3FFF]
FULL_SIZE = {t: (max(off + struct.calcsize("<" + code) for _, off, code in f) if f else 0)
             for t, f in LAYOUTS.items()}


def check_columns(cols: dict) -> None:
    n = cols.n
    for name, col in cols.items():
        assert len(col) == n, name
        if isinstance(col, BytesColumn):
            assert (col.lengths <= col.data.shape[1]).all()


def decode_or_error(packets) -> dict | None:
    try:
        cols = decode_packets(packets)
    except DecodeError as e:
        assert str(e) and "\n" not in str(e)
        return None
    check_columns(cols)
    return cols


@FUZZ
@given(data=st.data())
def test_mutated_replies_only_raise_decode_error(data):
    packets = [bytearray(p) for p in data.draw(st.lists(st.sampled_from(REPLIES), min_size=1, max_size=3))]
    for p in packets:
        for _ in range(data.draw(st.integers(0, 12))):
            pos = data.draw(st.integers(0, len(p) - 1))
            p[pos] = data.draw(st.integers(0, 255))
        if data.draw(st.booleans()):
            del p[data.draw(st.integers(0, len(p))):]
    decode_or_error(bytes(p) for p in packets)


@FUZZ
@given(data=st.data())
def test_mutated_length_fields_only_raise_decode_error(data):
    """Aim at the words that frame the data: nlmsg_len, rta_len and rta_type."""
    p = bytearray(data.draw(st.sampled_from(REPLIES)))
    frames = []
    off = 0
    while off + 16 <= len(p):
        ln = struct.unpack_from("<I", p, off)[0]
        frames.append(off)
        pos = off + 16 + 72
        while pos + 4 <= off + ln:
            frames.append(pos)
            pos += (struct.unpack_from("<H", p, pos)[0] + 3) & ~3
        off += (ln + 3) & ~3
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.sampled_from(frames))
        value = data.draw(st.sampled_from([0, 1, 3, 4, 5, 15, 16, 17, 87, 88, 0xFFFF, 0xFFFFFFFF])
                          | st.integers(0, 0xFFFFFFFF))
        struct.pack_into("<I", p, at, value)
    decode_or_error([bytes(p)])


@FUZZ
@given(cut=st.integers(0, len(PCAP)), flips=st.lists(st.tuples(st.integers(0, len(PCAP) - 1),
                                                               st.integers(0, 255)), max_size=6))
def test_truncated_and_mutated_pcaps_only_raise_decode_error(pcap_dir, cut, flips):
    data = bytearray(PCAP[:cut])
    for pos, b in flips:
        if pos < len(data):
            data[pos] = b
    path = pcap_dir / "fuzz.pcap"
    path.write_bytes(bytes(data))
    try:
        decode_or_error(p for _, p in read_packets(str(path)))
    except DecodeError as e:
        assert str(path) in str(e) and "\n" not in str(e)


@pytest.fixture(scope="module")
def pcap_dir():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


SENTINEL = rtattr(MARK, b"\xff" * 48)


@FUZZ
@given(kind=st.sampled_from(TYPES), data=st.data())
def test_short_attribute_never_reads_past_its_end(kind, data):
    full = FULL_SIZE.get(kind, 16) or 16
    length = data.draw(st.integers(0, full + 8))
    payload = data.draw(st.binary(min_size=length, max_size=length))
    msg = nlmsg(inet_diag_msg() + rtattr(kind, payload, pad=b"\xff") + SENTINEL)
    cols = decode_packets([msg + DONE])
    assert cols.n == 1
    got = row_values(cols, 0)
    want = {k: v for k, v in expected_attr(kind, payload).items() if v not in (0, b"")}
    ours = {k: v for k, v in got.items() if k in ALL_SCHEMA_FIELDS}
    assert ours == want


@FUZZ
@given(data=st.data())
def test_lying_rta_len_stays_inside_the_message(data):
    """rta_len larger than what is left: the walk stops, nothing of the next message is taken."""
    good = rtattr(SKMEMINFO, struct.pack("<9I", *range(1, 10)))
    claim = data.draw(st.integers(0, 0xFFFF))
    bad = struct.pack("<HH", claim, INFO) + b"\xff" * data.draw(st.integers(0, 40))
    first = nlmsg(inet_diag_msg(sport=1) + good + bad)
    second = nlmsg(inet_diag_msg(sport=2) + rtattr(INFO, b"\x07" * 240))
    cols = decode_packets([align4(first) + second + DONE])
    assert cols.n == 2
    assert_record(cols, 1, parse_message(second), "second message")
    got = row_values(cols, 0)
    assert got["sk_mem_info_drops"] == 9
    if not (4 <= claim <= len(bad)):
        assert not any(k.startswith("tcp_info_") for k in got), "attribute running past its message decoded"


def _damage_attributes(msg: bytes, data) -> bytes:
    """Flip bytes in the attribute area only (header and nlmsg_len stay intact)."""
    m = bytearray(msg)
    start = 16 + 72
    assume(len(m) > start)
    for _ in range(data.draw(st.integers(1, 10))):
        pos = data.draw(st.integers(start, len(m) - 1))
        m[pos] = data.draw(st.integers(0, 255))
    return bytes(m)


def _messages(packet: bytes) -> list[bytes]:
    out, off = [], 0
    while off + 16 <= len(packet):
        ln, kind = struct.unpack_from("<IH", packet, off)
        if kind == 20:
            out.append(packet[off:off + ln])
        off += (ln + 3) & ~3
    return out


REAL_MESSAGES = [m for p in REPLIES for m in _messages(p)]


@FUZZ
@given(data=st.data())
def test_untouched_messages_still_decode(data):
    picks = data.draw(st.lists(st.integers(0, len(REAL_MESSAGES) - 1), min_size=2, max_size=6))
    msgs = [REAL_MESSAGES[i] for i in picks]
    victim = data.draw(st.integers(0, len(msgs) - 1))
    msgs[victim] = _damage_attributes(msgs[victim], data)
    packet = b"".join(m + b"\0" * ((-len(m)) % 4) for m in msgs) + DONE
    before = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "rtattr"}) or 0
    cols = decode_packets([packet])
    assert cols.n == len(msgs)
    check_columns(cols)
    for i, m in enumerate(msgs):
        want = parse_message(m)
        if i != victim:
            assert_record(cols, i, want, f"untouched message {i}")
        else:  # the damaged message keeps its inet_diag_msg
            got = row_values(cols, i)
            for k, v in want.items():
                if k.startswith("inet_diag_msg_"):
                    assert got.get(k, 0 if not isinstance(v, bytes) else b"") == v, k
    after = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "rtattr"}) or 0
    # one count per message whose attribute walk hits a bad rta_len, none for the others
    assert after - before == sum(_walk_breaks(m) for m in msgs)


def _walk_breaks(msg: bytes) -> bool:
    """True if an attribute of msg has rta_len < 4 or runs past nlmsg_len (reference walk)."""
    pos, end = 16 + 72, struct.unpack_from("<I", msg)[0]
    while pos + 4 <= end:
        rl = struct.unpack_from("<H", msg, pos)[0]
        if rl < 4 or pos + rl > end:
            return True
        pos += (rl + 3) & ~3
    return False


def test_walk_breaks_reference_sees_damage():
    """The reference used above: a real message walks clean, a lying rta_len breaks it."""
    clean = nlmsg(inet_diag_msg() + rtattr(CONG, b"bbr\0"))
    assert not _walk_breaks(clean) and all(not _walk_breaks(m) for m in REAL_MESSAGES)
    assert _walk_breaks(nlmsg(inet_diag_msg() + struct.pack("<HH", 2, INFO) + b"\0" * 8))


def test_damaged_attribute_is_counted():
    msg = nlmsg(inet_diag_msg() + struct.pack("<HH", 2, INFO) + b"\0" * 8)
    before = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "rtattr"}) or 0
    cols = decode_packets([msg + DONE])
    after = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "rtattr"}) or 0
    assert cols.n == 1 and after == before + 1


def test_short_message_is_dropped_and_counted():
    short = struct.pack("<IHHII", 16 + 40, 20, 2, 1, 0) + b"\x02" * 40  # shorter than inet_diag_msg
    good = nlmsg(inet_diag_msg(sport=7))
    before = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "inet_diag_msg"}) or 0
    cols = decode_packets([short + good + DONE])
    after = REGISTRY.get_sample_value("xtcp2_decode_errors_total", {"what": "inet_diag_msg"}) or 0
    assert cols.n == 1 and cols["inet_diag_msg_socket_source_port"].tolist() == [7]
    assert after == before + 1


@pytest.mark.parametrize("packet,words", [
    (struct.pack("<IHHII", 4, 20, 2, 1, 0), "nlmsg_len"),
    (struct.pack("<IHHII", 400, 20, 2, 1, 0) + bytes(40), "nlmsg_len"),
    (struct.pack("<IHHIIi", 20, 2, 0, 1, 0, -13), "error"),
])
def test_framing_errors_are_decode_errors(packet, words):
    with pytest.raises(DecodeError) as err:
        decode_packets([packet])
    assert words in str(err.value).lower() or "permission" in str(err.value).lower()


def test_decoder_output_is_a_copy_of_the_input():
    """Every column survives the receive buffer being overwritten (no views into it).

    The daemon decodes straight out of a reused chunk buffer (decode_messages(ch.buf, ...));
    this hands the decoder such a buffer and then overwrites that very buffer.
    """
    msg = align4(nlmsg(inet_diag_msg(src=b"\x0a\x00\x00\x05", dst=b"\x0a\x00\x00\x06", sport=7)
                       + rtattr(CONG, b"bbr\0") + rtattr(INFO, bytes(range(1, 241)))
                       + rtattr(SKMEMINFO, struct.pack("<9I", *range(1, 10)))))
    buf = bytearray(msg + DONE)
    cols = decode_messages(buf, np.array([0], dtype=np.uint32), used=len(buf))
    before = row_values(cols, 0)
    assert before["inet_diag_msg_socket_source"] == b"\x0a\x00\x00\x05"
    assert before["congestion_algorithm_string"] == b"bbr" and before["sk_mem_info_drops"] == 9
    buf[:] = b"\xee" * len(buf)
    assert row_values(cols, 0) == before
    # the decoder did read this buffer: decoding it again now gives other values
    again = decode_messages(buf, np.array([0], dtype=np.uint32), used=len(buf))
    assert again.n == 0 or row_values(again, 0) != before
