"""pcap files of netlink traffic (LINKTYPE_NETLINK = 253), as nlmon / the fixtures write them.

Each packet: a 16-byte cooked header (pkttype, ARPHRD_NETLINK, ..., protocol), then
the netlink bytes of one send() or recv(). Reading yields those netlink bytes; the
writer produces files in the same format, so `-capturePath` output can become a test
fixture for any kernel.
"""
from __future__ import annotations

import os
import struct
import time
from typing import Iterator

from ..errors import DecodeError
from . import constants as c

LINKTYPE_NETLINK = 253
COOKED_LEN = 16
_GLOBAL = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_COOKED = struct.Struct(">HHIQ")  # pkttype, ARPHRD_NETLINK, padding, ..., netlink protocol in last 2 bytes
_MAGICS = {0xA1B2C3D4: ("<", 1_000), 0xA1B23C4D: ("<", 1), 0xD4C3B2A1: (">", 1_000), 0x4D3CB2A1: (">", 1)}
PACKET_HOST, PACKET_OUTGOING = 0, 4
ARPHRD_NETLINK = 0x0338


# No netlink reply is near this (the kernel fills ~32 KiB per recv; -packetSize is at
# most 16 MiB): a larger incl_len is corruption, refused before anything is allocated.
MAX_PACKET = 64 << 20


def read_packets(path: str, protocol: int | None = c.NETLINK_SOCK_DIAG) -> Iterator[tuple[int, bytes]]:
    """Yield (timestamp_ns, netlink bytes) per packet of `protocol` (None = every protocol).

    The file is read one packet at a time, so memory stays at one packet whatever the
    file size, and the packets before a damaged one are yielded before the error.
    nlmon captures every netlink family: rtnetlink's RTM_NEWADDR has the same message
    type number (20) as SOCK_DIAG_BY_FAMILY, so packets of other protocols must be
    skipped by the cooked header's protocol field, not by message type.
    Raises DecodeError on a corrupt or truncated file, naming the packet.
    """
    try:
        fh = open(path, "rb")
    except OSError as e:
        raise DecodeError(f"{path}: {e.strerror}") from None
    with fh:
        try:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(_GLOBAL.size)
        except OSError as e:  # a directory, an unreadable device
            raise DecodeError(f"{path}: {e.strerror}") from None
        if len(head) < _GLOBAL.size:
            raise DecodeError(f"{path}: not a pcap file (only {len(head)} bytes)")
        magic = struct.unpack_from("<I", head)[0]
        if magic not in _MAGICS:
            raise DecodeError(f"{path}: not a pcap file (magic {magic:#010x})")
        endian, ns_per_unit = _MAGICS[magic]
        rec = struct.Struct(endian + "IIII")
        linktype = struct.unpack_from(endian + "IHHiIII", head)[6] & 0x0FFFFFFF
        if linktype != LINKTYPE_NETLINK:
            raise DecodeError(f"{path}: link type {linktype}, expected {LINKTYPE_NETLINK} (netlink)")
        off = _GLOBAL.size
        index = 0
        while True:
            hdr = fh.read(rec.size)
            if not hdr:
                return
            if len(hdr) < rec.size:
                raise DecodeError(f"{path}: packet {index} header truncated at byte {off}")
            sec, frac, incl, _orig = rec.unpack(hdr)
            off += rec.size
            left = max(0, size - off) if size else incl  # size 0: a pipe or /proc file, read and see
            if incl > min(left, MAX_PACKET):
                raise DecodeError(f"{path}: packet {index} truncated ({incl} bytes announced, {left} left)")
            if incl < COOKED_LEN:
                raise DecodeError(f"{path}: packet {index} shorter than the cooked header")
            data = fh.read(incl)
            if len(data) < incl:
                raise DecodeError(f"{path}: packet {index} truncated ({incl} bytes announced, {len(data)} left)")
            proto = struct.unpack_from(">H", data, COOKED_LEN - 2)[0]
            if protocol is None or proto == protocol:
                yield sec * 1_000_000_000 + frac * ns_per_unit, data[COOKED_LEN:]
            off += incl
            index += 1


class PcapWriter:
    """Append netlink packets to a new pcap file."""

    def __init__(self, path: str, snaplen: int = 262144) -> None:
        self.path = path
        self._fh = open(path, "wb")
        self._fh.write(_GLOBAL.pack(0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_NETLINK))
        self.packets = 0

    def write(self, payload: bytes, outgoing: bool = False) -> None:
        now = time.time_ns()
        cooked = struct.pack(">HH4x6xH", PACKET_OUTGOING if outgoing else PACKET_HOST, ARPHRD_NETLINK,
                             c.NETLINK_SOCK_DIAG)
        self._fh.write(_RECORD.pack(now // 1_000_000_000, (now // 1000) % 1_000_000,
                                    len(payload) + COOKED_LEN, len(payload) + COOKED_LEN))
        self._fh.write(cooked)
        self._fh.write(payload)
        self.packets += 1

    def __call__(self, payload: bytes, outgoing: bool = False) -> None:
        self.write(payload, outgoing)

    def close(self) -> None:
        self._fh.close()


def capture_file_name(directory: str, netns: str, family: int) -> str:
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in netns)
    return os.path.join(directory, f"xtcp2_{safe}_{family}_{time.time_ns()}.pcap")
