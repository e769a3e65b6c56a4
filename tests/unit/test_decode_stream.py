"""`xtcp2 decode` streams: a truncated capture still yields its intact packets' records
(then one error line, exit 2), and memory does not grow with the capture's size."""
from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from xtcp2.errors import DecodeError
from xtcp2.netlink.replay import decode_packets, decode_stream

from .test_attributes import FIXTURES, parse_message, socket_messages

ROOT = Path(__file__).resolve().parents[2]
CAPTURE = FIXTURES / "5_15_164" / "5_15_164_tcp_1000_sockets.pcap"
NETLINK_SOCK_DIAG = 4


def packets(data: bytes) -> list[tuple[int, int, int]]:
    """(offset of the record header, incl_len, cooked protocol) of every packet (own reader)."""
    off, out = 24, []
    while off < len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, off)
        out.append((off, incl, struct.unpack_from(">H", data, off + 16 + 14)[0]))
        off += 16 + incl
    return out


def payload(data: bytes, off: int, incl: int) -> bytes:
    return data[off + 32:off + 16 + incl]


def decode(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "xtcp2", "decode", *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.parametrize("where", ["mid_packet", "mid_header"])
def test_truncated_capture_yields_its_intact_packets(tmp_path: Path, where: str):
    data = CAPTURE.read_bytes()
    pk = packets(data)
    replies = [i for i, (off, incl, proto) in enumerate(pk)
               if proto == NETLINK_SOCK_DIAG and socket_messages([payload(data, off, incl)])]
    victim = replies[len(replies) // 2]
    off, incl, _ = pk[victim]
    cut = off + 16 + incl // 2 if where == "mid_packet" else off + 7
    path = tmp_path / "cut.pcap"
    path.write_bytes(data[:cut])
    intact = [payload(data, o, n) for o, n, proto in pk[:victim] if proto == NETLINK_SOCK_DIAG]
    want = [parse_message(p, o)["inet_diag_msg_socket_cookie"] for p, o in socket_messages(intact)]
    assert len(want) > 100

    r = decode(str(path))
    got = [json.loads(line)["inetDiagMsgSocketCookie"] for line in r.stdout.splitlines()]  # README: JSON dialect
    assert got == want  # every record of the packets before the cut, in order, and nothing else
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(path) in err[0] and f"packet {victim}" in err[0] and "truncated" in err[0]
    assert f"the {len(want)} records before it were written" in err[0]


def test_damaged_packet_mid_file_keeps_the_packets_before_it():
    data = CAPTURE.read_bytes()
    pk = [payload(data, o, n) for o, n, proto in packets(data) if proto == NETLINK_SOCK_DIAG]
    bad = bytearray(pk[5])
    struct.pack_into("<I", bad, 0, len(bad) + 64)  # first message runs past its packet
    stream = decode_stream(pk[:5] + [bytes(bad)] + pk[6:], chunk_bytes=40_000)
    cookies = []
    with pytest.raises(DecodeError, match="packet 5: truncated"):
        for cols in stream:
            cookies += cols["inet_diag_msg_socket_cookie"].tolist()
    assert cookies == decode_packets(pk[:5])["inet_diag_msg_socket_cookie"].tolist()


def test_stream_in_small_chunks_equals_one_decode():
    data = CAPTURE.read_bytes()
    pk = [payload(data, o, n) for o, n, proto in packets(data) if proto == NETLINK_SOCK_DIAG]
    whole = decode_packets(pk)
    parts = list(decode_stream(pk, chunk_bytes=10_000))  # smaller than a packet: one per chunk
    assert len(parts) > 3
    assert sum(p.n for p in parts) == whole.n
    for field in ("inet_diag_msg_socket_cookie", "tcp_info_rtt", "inet_diag_msg_socket_source_port"):
        assert [v for p in parts for v in p[field].tolist()] == whole[field].tolist()


PEAK_RSS = r"""
import resource, subprocess, sys
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)
lines = 0
while block := p.stdout.read(1 << 20):
    lines += block.count(b"\n")
rc = p.wait()
print(rc, lines, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
"""


def peak_rss(path: Path) -> tuple[int, int, int]:
    """(exit code, records, peak RSS in bytes) of `xtcp2 decode path`, measured alone."""
    r = subprocess.run([sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "xtcp2", "decode", str(path)],
                       capture_output=True, text=True, cwd=ROOT, timeout=600, check=True)
    rc, lines, rss = map(int, r.stdout.split())
    return rc, lines, rss


@pytest.mark.slow
def test_memory_does_not_grow_with_the_capture(tmp_path: Path):
    """A real 32 KiB reply repeated: 5x the file costs next to no extra memory (the small
    file is already several decode chunks, so both runs are past the warm-up)."""
    data = CAPTURE.read_bytes()
    off, incl, _ = max((p for p in packets(data) if p[2] == NETLINK_SOCK_DIAG), key=lambda p: p[1])
    rec = data[off:off + 16 + incl]
    per_packet = len(socket_messages([payload(data, off, incl)]))
    sizes = {}
    for name, mib in (("small", 20), ("large", 100)):
        n = (mib << 20) // len(rec)
        path = tmp_path / f"{name}.pcap"
        with open(path, "wb") as fh:
            fh.write(data[:24])
            for _ in range(n):
                fh.write(rec)
        rc, lines, rss = peak_rss(path)
        assert rc == 0 and lines == n * per_packet
        sizes[name] = (path.stat().st_size, rss)
        path.unlink()
    (small_file, small_rss), (large_file, large_rss) = sizes["small"], sizes["large"]
    grown = large_rss - small_rss
    print(f"file {small_file >> 20} MiB -> peak RSS {small_rss >> 20} MiB; "
          f"file {large_file >> 20} MiB -> peak RSS {large_rss >> 20} MiB")
    # reading the whole file would add at least the 80 MiB difference (twice: bytes + chunk)
    assert grown < (large_file - small_file) / 5, sizes
