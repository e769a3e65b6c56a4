"""nsq:HOST:PORT[?topic=xtcp]   (nsqd's TCP port, 4150 by default)

nsqd TCP protocol ("  V2" magic, IDENTIFY, MPUB): queued payloads go out as one MPUB
per batch (one payload = one NSQ message), and count as sent when nsqd answers OK.
Heartbeats from nsqd are answered with NOP. A batch nsqd rejects as invalid
(E_BAD_TOPIC, E_BAD_MESSAGE, E_BAD_BODY) is dropped and counted; anything else is
retried on a new connection.

Tested against a protocol test double (tests/servers/nsq_double.py), not a real nsqd:
no nsqd build is installable on the test machines.
"""
from __future__ import annotations

import json
import re
import select
import socket
import struct

from ..errors import DestinationError
from .base import register
from .queued import Item, PartialFailure, PermanentError, QueuedDestination, num_option, parse_options, split_host_port

TOPIC_RE = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")
FRAME_RESPONSE, FRAME_ERROR = 0, 1
PERMANENT = (b"E_BAD_TOPIC", b"E_BAD_MESSAGE", b"E_BAD_BODY", b"E_INVALID")


@register("nsq")
class NsqDestination(QueuedDestination):
    batch_max_items = 200
    batch_max_bytes = 4 << 20  # under nsqd's default --max-body-size of 5 MiB
    idle_interval = 0.1        # answer nsqd's heartbeats while there is nothing to send

    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("nsq", query, {"topic", "timeout"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("nsq", hostport, 4150)
        self.topic = opts.get("topic", config.topic) or "xtcp"
        if not (1 <= len(self.topic) <= 64 and TOPIC_RE.match(self.topic)):
            raise DestinationError(f"nsq: topic {self.topic!r} is not valid (1-64 of [.a-zA-Z0-9_-])")
        self.timeout = num_option("nsq", opts, "timeout", 5.0, 0.1, float)
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self.start()

    def _connect(self) -> None:
        try:
            s = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as e:
            raise DestinationError(f"nsq {self.host}:{self.port}: unreachable: {e.strerror or e}") from None
        self._sock, self._buf = s, bytearray()
        ident = json.dumps({"client_id": "xtcp2", "hostname": self.config.hostname, "user_agent": "xtcp2",
                            "feature_negotiation": False}).encode()
        s.sendall(b"  V2" + b"IDENTIFY\n" + struct.pack(">i", len(ident)) + ident)
        kind, data = self._read_reply()
        if kind != FRAME_RESPONSE or data != b"OK":
            raise DestinationError(f"nsq {self.host}:{self.port}: IDENTIFY refused: {data[:200]!r}")

    def _read_frame(self) -> tuple[int, bytes]:
        while len(self._buf) < 8:
            self._recv()
        size, kind = struct.unpack(">ii", self._buf[:8])
        while len(self._buf) < 4 + size:
            self._recv()
        data = bytes(self._buf[8:4 + size])
        del self._buf[:4 + size]
        return kind, data

    def _recv(self) -> None:
        chunk = self._sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("nsqd closed the connection")
        self._buf.extend(chunk)

    def _read_reply(self) -> tuple[int, bytes]:
        """The next non-heartbeat frame."""
        while True:
            kind, data = self._read_frame()
            if kind == FRAME_RESPONSE and data == b"_heartbeat_":
                self._sock.sendall(b"NOP\n")
                continue
            return kind, data

    def _idle(self) -> None:
        while select.select([self._sock], [], [], 0)[0]:
            self._recv()
            while len(self._buf) >= 8:
                size, kind = struct.unpack(">ii", self._buf[:8])
                if len(self._buf) < 4 + size:
                    break
                kind, data = self._read_frame()
                if kind == FRAME_RESPONSE and data == b"_heartbeat_":
                    self._sock.sendall(b"NOP\n")
                elif kind == FRAME_ERROR:
                    raise DestinationError(f"nsq: nsqd error: {data[:200].decode(errors='replace')}")

    def _deliver(self, batch: list[Item]) -> None:
        try:
            self._mpub(batch)
        except PermanentError as e:
            if len(batch) == 1:
                raise
            # nsqd refuses a whole MPUB for one bad message (and hangs up): find it
            rejected = []
            for it in batch:
                self._disconnect()
                self._connect()
                try:
                    self._mpub([it])
                except PermanentError:
                    rejected.append(it)
            raise PartialFailure(f"{e}; {len(rejected)} of {len(batch)} messages rejected", rejected) from None

    def _mpub(self, batch: list[Item]) -> None:
        body = struct.pack(">i", len(batch)) + b"".join(struct.pack(">i", len(i.payload)) + i.payload for i in batch)
        try:
            self._sock.sendall(f"MPUB {self.topic}\n".encode() + struct.pack(">i", len(body)) + body)
            kind, data = self._read_reply()
        except socket.timeout:
            raise DestinationError(f"nsq: no reply from nsqd within {self.timeout}s") from None
        except OSError as e:
            raise DestinationError(f"nsq {self.host}:{self.port}: {e.strerror or e}") from None
        if kind == FRAME_RESPONSE and data == b"OK":
            return
        if kind == FRAME_ERROR and data.split(b" ", 1)[0] in PERMANENT:
            raise PermanentError(f"nsq: nsqd rejected the batch: {data.decode(errors='replace')}")
        raise DestinationError(f"nsq: unexpected reply from nsqd: {data[:200].decode(errors='replace')}")

    def _disconnect(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:
                pass
            self._sock = None
