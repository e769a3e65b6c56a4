"""tcp:HOST:PORT[?timeout=5] - a TCP stream, payloads written back to back.

As upstream: the bytes go out verbatim and framing is the marshaller's job, so with
-marshal protobufList the stream is length-delimited (varint(len) + Envelope, the
framing ClickHouse and upstream's readers expect); pair jsonl/csv/tsv for line-based
receivers (Vector, Logstash, `nc`).

The connection is re-established with back-off when the receiver goes away; queued
payloads wait for it (bounded queue, drops counted). "Sent" means the kernel accepted
the bytes. Before each write the socket is checked for an orderly close by the peer,
so a receiver that shut down cleanly is noticed before data is written into the void;
what is in flight when a receiver crashes (at most a socket buffer) is lost with it.
"""
from __future__ import annotations

import select
import socket

from ..errors import DestinationError
from .base import register
from .queued import Item, QueuedDestination, num_option, parse_options, split_host_port


def peer_closed(sock: socket.socket) -> bool:
    """True when the peer has closed its end (FIN or RST already received)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


@register("tcp")
class TCPDestination(QueuedDestination):
    batch_max_items = 64
    batch_max_bytes = 4 << 20

    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("tcp", query, {"timeout"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("tcp", hostport)
        self.timeout = num_option("tcp", opts, "timeout", 5.0, 0.1, float, maximum=300.0)
        self._sock: socket.socket | None = None
        self.start()

    def _connect(self) -> None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise DestinationError(f"tcp {self.host}:{self.port}: cannot connect: {e.strerror or e}") from None
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self._sock = s

    def _deliver(self, batch: list[Item]) -> None:
        if peer_closed(self._sock):
            raise DestinationError(f"tcp {self.host}:{self.port}: connection closed by the receiver")
        try:
            self._sock.sendall(b"".join(i.payload for i in batch))
        except OSError as e:
            raise DestinationError(f"tcp {self.host}:{self.port}: {e.strerror or e}") from None

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
