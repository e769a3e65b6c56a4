"""nats:HOST:PORT[?subject=xtcp&jetstream=1]

A small synchronous NATS client speaking the text protocol directly (INFO, CONNECT,
PUB/HPUB, PING/PONG, MSG/HMSG), so it runs in the queue's sender thread without an
event loop. One payload = one NATS message on `subject` (default -topic).

core (default): a batch of PUBs followed by PING; the server's PONG confirms it has
processed all of them (core NATS does not store messages: subscribers that are away
miss them, as with any core NATS publisher).
jetstream=1: every message is published with a reply inbox and a Nats-Msg-Id header,
and counts as sent only when the stream acknowledges it; a retried message keeps its
id, so the server's duplicate window drops a second copy. A stream must already
capture the subject ("no stream" is reported as such).

Credentials come from the environment, never the command line: XTCP2_NATS_TOKEN, or
XTCP2_NATS_USER + XTCP2_NATS_PASSWORD.
"""
from __future__ import annotations

import itertools
import json
import os
import re
import secrets
import socket
import time

from ..errors import DestinationError
from .base import register
from .queued import Item, PermanentError, QueuedDestination, num_option, parse_options, split_host_port

SUBJECT_RE = re.compile(r"^[^\s*>]+$")
_NL = b"\r\n"


class _Conn:
    """A buffered NATS protocol connection."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.info: dict = {}

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def _fill(self) -> None:
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf.extend(chunk)

    def line(self) -> bytes:
        while True:
            i = self.buf.find(_NL)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[:i + 2]
                return out
            self._fill()

    def exact(self, n: int) -> bytes:
        while len(self.buf) < n + 2:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n + 2]
        return out

    def next_op(self) -> tuple[str, bytes, bytes, bytes]:
        """(op, args line, headers, payload); answers server PINGs on the way."""
        while True:
            ln = self.line()
            op, _, rest = ln.partition(b" ")
            op = op.upper()
            if op == b"PING":
                self.sock.sendall(b"PONG\r\n")
                continue
            if op == b"MSG":
                parts = rest.split()
                return "MSG", rest, b"", self.exact(int(parts[-1]))
            if op == b"HMSG":
                parts = rest.split()
                hlen, total = int(parts[-2]), int(parts[-1])
                data = self.exact(total)
                return "HMSG", rest, data[:hlen], data[hlen:]
            if op == b"INFO":
                self.info = json.loads(rest)
                continue
            return op.decode(errors="replace"), rest, b"", b""


@register("nats")
class NatsDestination(QueuedDestination):
    batch_max_items = 200
    batch_max_bytes = 4 << 20

    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("nats", query, {"subject", "jetstream", "ackTimeout"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("nats", hostport, 4222)
        self.subject = opts.get("subject", config.topic) or "xtcp"
        if not SUBJECT_RE.match(self.subject):
            raise DestinationError(f"nats: subject {self.subject!r} is not a valid publish subject")
        self.jetstream = bool(num_option("nats", opts, "jetstream", 0, 0))
        self.ack_timeout = num_option("nats", opts, "ackTimeout", 5.0, 0.1, float)
        self._conn: _Conn | None = None
        self._nonce = secrets.token_hex(6)
        self._ids = itertools.count(1)
        self._inbox = f"_INBOX.xtcp2.{self._nonce}"
        self.start()

    def _connect(self) -> None:
        try:
            c = _Conn(self.host, self.port, self.ack_timeout)
        except OSError as e:
            raise DestinationError(f"nats {self.host}:{self.port}: unreachable: {e.strerror or e}") from None
        try:
            first = c.line()
            if not first.startswith(b"INFO "):
                raise DestinationError(f"nats {self.host}:{self.port}: not a NATS server")
            c.info = json.loads(first[5:])
            hello = {"verbose": False, "pedantic": False, "name": f"xtcp2-{self.config.hostname}", "lang": "python",
                     "version": "xtcp2", "protocol": 1, "headers": True, "no_responders": True}
            if os.environ.get("XTCP2_NATS_TOKEN"):
                hello["auth_token"] = os.environ["XTCP2_NATS_TOKEN"]
            elif os.environ.get("XTCP2_NATS_USER"):
                hello["user"] = os.environ["XTCP2_NATS_USER"]
                hello["pass"] = os.environ.get("XTCP2_NATS_PASSWORD", "")
            c.sock.sendall(b"CONNECT " + json.dumps(hello).encode() + b"\r\nPING\r\n")
            if self.jetstream:
                c.sock.sendall(f"SUB {self._inbox}.* 1\r\n".encode())
            op, rest, _, _ = c.next_op()
            if op == "-ERR":
                raise DestinationError(f"nats {self.host}:{self.port}: {rest.decode(errors='replace').strip(chr(39))}")
            if op != "PONG":
                raise DestinationError(f"nats {self.host}:{self.port}: unexpected {op} after CONNECT")
        except Exception:
            c.close()
            raise
        self._conn = c

    def _deliver(self, batch: list[Item]) -> None:
        c = self._conn
        max_payload = int(c.info.get("max_payload", 1 << 20))
        too_big = [it for it in batch if len(it.payload) > max_payload]
        if too_big:
            raise PermanentError(f"nats: payload of {len(too_big[0].payload)} bytes exceeds the server's "
                                 f"max_payload {max_payload}")
        out = bytearray()
        waiting: dict[str, Item] = {}
        for it in batch:
            if not self.jetstream:
                out += f"PUB {self.subject} {len(it.payload)}\r\n".encode() + it.payload + _NL
                continue
            msg_id = getattr(it, "msg_id", None)
            if msg_id is None:  # stable across retries: the server de-duplicates on it
                msg_id = it.msg_id = f"{self._nonce}-{next(self._ids)}"
            reply = f"{self._inbox}.{msg_id.rsplit('-', 1)[1]}"
            hdr = f"NATS/1.0\r\nNats-Msg-Id: {msg_id}\r\n\r\n".encode()
            out += (f"HPUB {self.subject} {reply} {len(hdr)} {len(hdr) + len(it.payload)}\r\n".encode()
                    + hdr + it.payload + _NL)
            waiting[reply] = it
        out += b"PING\r\n"
        try:
            c.sock.sendall(out)
            deadline = time.monotonic() + self.ack_timeout
            got_pong = False
            while not got_pong or waiting:
                c.sock.settimeout(max(0.01, deadline - time.monotonic()))
                op, rest, hdr, data = c.next_op()
                if op == "PONG":
                    got_pong = True
                elif op == "-ERR":
                    raise DestinationError(f"nats: server error {rest.decode(errors='replace')}")
                elif op in ("MSG", "HMSG"):
                    subj = rest.split()[0].decode()
                    if subj not in waiting:
                        continue
                    if hdr.startswith(b"NATS/1.0 503"):
                        raise DestinationError(f"nats: no JetStream stream captures subject {self.subject!r}")
                    try:
                        ack = json.loads(data)
                    except ValueError:
                        raise DestinationError("nats: unreadable JetStream ack") from None
                    if "error" in ack:
                        raise DestinationError(f"nats: JetStream rejected a message: "
                                               f"{ack['error'].get('description', ack['error'])}")
                    del waiting[subj]
        except socket.timeout:
            raise DestinationError(f"nats: no acknowledgement within {self.ack_timeout}s") from None
        except OSError as e:
            raise DestinationError(f"nats {self.host}:{self.port}: {e.strerror or e}") from None

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
