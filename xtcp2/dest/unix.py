"""unix:/PATH (stream) and unixgram:/PATH[?maxDatagram=65536] (datagrams).

unix: a SOCK_STREAM connection to a listening socket; payloads are written back to
back (protobufList is self-delimiting: varint(len) + Envelope). Reconnects when the
listener goes away. "Sent" means the kernel accepted the bytes: what sits unread in the
receiver's socket buffer when the receiver dies is lost with it (at most one socket
buffer, ~200 KiB by default).

unixgram: one SOCK_DGRAM datagram per Envelope to a bound socket (Vector's
`socket` source with mode unix_datagram, for instance); with protobufList the rows are
re-packed into datagrams of at most maxDatagram bytes (see udp). A receiver that is
not there yet is retried with back-off, one whose queue is full makes the send wait
(up to `timeout` seconds, then retried), so nothing is dropped while the queue holds.
"""
from __future__ import annotations

import os
import socket

from ..errors import DestinationError
from .base import register
from .queued import Item, QueuedDestination, num_option, parse_options
from .udp import DatagramDestination


def _check_path(scheme: str, path: str) -> str:
    if not path:
        raise DestinationError(f"{scheme}: needs a socket path, e.g. {scheme}:/run/xtcp2/output.sock")
    if len(os.fsencode(path)) > 107:
        raise DestinationError(f"{scheme}: socket path longer than 107 bytes: {path!r}")
    return path



def _connect_unix(sock_type: int, scheme: str, path: str, timeout: float) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, sock_type)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise DestinationError(f"{scheme} {path}: cannot connect: {e.strerror or e}") from None
    return s

@register("unix")
class UnixStreamDestination(QueuedDestination):
    batch_max_items = 64
    batch_max_bytes = 4 << 20

    def __init__(self, address: str, config) -> None:
        path, _, query = address.partition("?")
        opts = parse_options("unix", query, {"timeout"})
        super().__init__(address, config, opts)
        self.path = _check_path("unix", path)
        self.timeout = num_option("unix", opts, "timeout", 5.0, 0.1, float)
        self._sock: socket.socket | None = None
        self.start()

    def _connect(self) -> None:
        self._sock = _connect_unix(socket.SOCK_STREAM, "unix", self.path, self.timeout)

    def _deliver(self, batch: list[Item]) -> None:
        try:
            self._sock.sendall(b"".join(i.payload for i in batch))
        except OSError as e:
            raise DestinationError(f"unix {self.path}: {e.strerror or e}") from None

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


@register("unixgram")
class UnixgramDestination(DatagramDestination):
    default_max_datagram = 65536
    max_datagram_limit = 4 << 20  # bounded by the socket's wmem; EMSGSIZE is reported

    def __init__(self, address: str, config) -> None:
        path, _, query = address.partition("?")
        opts = parse_options("unixgram", query, {"maxDatagram", "timeout"})
        super().__init__(address, config, opts)
        self.path = _check_path("unixgram", path)
        self.timeout = num_option("unixgram", opts, "timeout", 5.0, 0.1, float)
        self._setup_datagram(opts)
        self.start()

    def _connect(self) -> None:
        self._sock = _connect_unix(socket.SOCK_DGRAM, "unixgram", self.path, self.timeout)
