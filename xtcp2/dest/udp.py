"""udp:HOST:PORT[?maxDatagram=1400]

Datagrams no larger than maxDatagram (default 1400 bytes: fits a 1500-byte MTU with
IPv4/IPv6 and tunnel headers, so nothing is fragmented). With -marshal protobufList the
rows of queued Envelopes are re-packed: each datagram is one varint(len)+Envelope
holding as many whole rows as fit, so a consumer reads every datagram on its own. A row
that alone exceeds maxDatagram is dropped and counted. Other marshallers send one
datagram per payload and drop (counted) payloads that do not fit.

UDP has no acknowledgement: "sent" means the kernel accepted the datagram. The socket
is connected, so an ICMP port-unreachable from a closed receiver surfaces as an error
on a later send (counted in xtcp2_dest_errors_total, the send is retried).
"""
from __future__ import annotations

import socket

from ..errors import DestinationError
from ..marshal.protobuf_list import unmarshal, varint
from .base import register
from .queued import Item, QueuedDestination, num_option, parse_options, split_host_port

ROW_TAG = 0x52  # Envelope.row: field 10, wire type 2


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise ValueError("truncated varint")
        b = buf[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, pos


def envelope_rows(body: bytes) -> list[bytes]:
    """An Envelope body -> its row fields, each still encoded (tag + length + row)."""
    rows, pos = [], 0
    while pos < len(body):
        start = pos
        tag, pos = _read_varint(body, pos)
        if tag & 7 != 2:
            raise ValueError(f"unexpected wire type {tag & 7} in Envelope")
        n, pos = _read_varint(body, pos)
        pos += n
        if pos > len(body):
            raise ValueError("row runs past the end of the Envelope")
        if tag == ROW_TAG:
            rows.append(body[start:pos])
    return rows


def pack_rows(payloads: list[bytes], limit: int) -> tuple[list[tuple[bytes, int]], int]:
    """Re-pack protobufList payloads into datagrams of at most `limit` bytes.

    Returns ([(datagram, rows)], rows too big to fit any datagram)."""
    out: list[tuple[bytes, int]] = []
    cur: list[bytes] = []
    cur_len = 0
    too_big = 0

    def emit() -> None:
        nonlocal cur, cur_len
        if cur:
            body = b"".join(cur)
            out.append((varint(len(body)) + body, len(cur)))
            cur, cur_len = [], 0

    for p in payloads:
        for body in unmarshal(p):
            for row in envelope_rows(body):
                if len(varint(len(row))) + len(row) > limit:
                    too_big += 1
                    continue
                if len(varint(cur_len + len(row))) + cur_len + len(row) > limit:
                    emit()
                cur.append(row)
                cur_len += len(row)
    emit()
    return out, too_big


class DatagramDestination(QueuedDestination):
    """Shared by udp and unixgram: batch payloads, re-pack into bounded datagrams."""

    batch_max_items = 64
    batch_max_seconds = 0.0
    default_max_datagram = 1400
    max_datagram_limit = 65507

    def _setup_datagram(self, opts: dict) -> None:
        self.max_datagram = num_option(self.scheme, opts, "maxDatagram", self.default_max_datagram, 64)
        if self.max_datagram > self.max_datagram_limit:
            raise DestinationError(f"{self.scheme}: maxDatagram must be <= {self.max_datagram_limit}")
        self.repack = self.config.marshal_to == "protobufList"
        self._sock: socket.socket | None = None
        self.datagrams = 0

    def _deliver(self, batch: list[Item]) -> None:
        too_big, why, skip = 0, "", set()
        if self.repack:
            try:
                grams, too_big = pack_rows([i.payload for i in batch], self.max_datagram)
                why = f"rows larger than maxDatagram={self.max_datagram}"
            except ValueError as e:
                grams, too_big = [], sum(i.records for i in batch)
                why = f"payload is not protobufList: {e}"
        else:
            grams = []
            for it in batch:
                if len(it.payload) > self.max_datagram:
                    skip.add(id(it))
                    too_big += it.records
                    why = f"payload larger than maxDatagram={self.max_datagram}"
                else:
                    grams.append((it.payload, it.records))
        for g, _ in grams:
            try:
                self._sock.send(g)
            except OSError as e:
                raise DestinationError(f"{self.scheme} {self.where}: {e.strerror or e}") from None
            self.datagrams += 1
        # counted only once everything went out: a retried batch must not count twice
        if too_big:
            self._drop(too_big, why)
            if skip:
                for it in batch:
                    if id(it) in skip:
                        it.records = 0
            else:
                self._take_from(batch, too_big)

    @staticmethod
    def _take_from(batch: list[Item], records: int) -> None:
        """Lower the batch's record counts by `records` already counted as dropped."""
        for it in batch:
            k = min(it.records, records)
            it.records -= k
            records -= k
            if not records:
                return

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@register("udp")
class UdpDestination(DatagramDestination):
    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("udp", query, {"maxDatagram"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("udp", hostport)
        self._setup_datagram(opts)
        try:
            self._family = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)[0][0]
        except socket.gaierror as e:
            raise DestinationError(f"udp: cannot resolve {self.host!r}: {e.strerror}") from None
        self.start()

    def _connect(self) -> None:
        s = socket.socket(self._family, socket.SOCK_DGRAM)
        try:
            s.connect((self.host, self.port))
        except OSError as e:
            s.close()
            raise DestinationError(f"udp {self.host}:{self.port}: {e.strerror or e}") from None
        self._sock = s
