"""A TEST DOUBLE of nsqd's TCP publish protocol. NOT the real nsqd.

No nsqd is installable here (not in PyPI, npm or Debian), so the NSQ destination is
tested against this double, written from nsqd's documented TCP protocol
(https://nsq.io/clients/tcp_protocol_spec.html):

  - the client opens with the 4-byte magic "  V2"
  - IDENTIFY\\n <u32 size> <json>       -> OK  (no feature negotiation)
  - PUB <topic>\\n <u32 size> <body>    -> OK | E_BAD_TOPIC | E_BAD_MESSAGE
  - MPUB <topic>\\n <u32 body size> <u32 count> (<u32 size> <body>)*  -> OK | E_...
  - NOP\\n (no reply), CLS\\n -> CLOSE_WAIT
  - every reply is a frame: <u32 size> <u32 type: 0 response, 1 error, 2 message> <data>
    with size = 4 + len(data); sizes are big-endian
  - the server sends a "_heartbeat_" response frame every heartbeat interval and closes
    the connection after two unanswered ones (the client answers with NOP)
  - topic names match ^[.a-zA-Z0-9_-]+(#ephemeral)?$, 1..64 chars; messages over
    max-msg-size (default 1 MiB) and bodies over max-body-size (5 MiB) are E_BAD_MESSAGE;
    an invalid command is E_INVALID and the connection is closed.

Messages are stored (per topic, in arrival order) before OK is sent, and the store
survives kill()/start(), like nsqd's disk-backed queue. What it does not model:
consumers (SUB/RDY/FIN), TLS, snappy/deflate, auth, the HTTP API, lookupd.
"""
from __future__ import annotations

import re
import socket
import struct
import threading
import time

from . import free_port

TOPIC_RE = re.compile(r"^[.a-zA-Z0-9_-]+(#ephemeral)?$")
FRAME_RESPONSE, FRAME_ERROR = 0, 1


class _Closed(Exception):
    pass


class NsqdDouble:
    name = "nsqd-double"

    def __init__(self, heartbeat_interval: float = 30.0, max_msg_size: int = 1 << 20,
                 max_body_size: int = 5 << 20) -> None:
        self.port = free_port()
        self.heartbeat_interval = heartbeat_interval
        self.max_msg_size = max_msg_size
        self.max_body_size = max_body_size
        self.topics: dict[str, list[bytes]] = {}
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []

    def messages(self, topic: str) -> list[bytes]:
        with self._lock:
            return list(self.topics.get(topic, []))

    # ---- lifecycle -----------------------------------------------------------------
    def start(self) -> "NsqdDouble":
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        t = threading.Thread(target=self._accept, args=(ls,), daemon=True, name="nsqd-double-accept")
        t.start()
        self._threads.append(t)
        return self

    def kill(self) -> None:
        """Drop the listener and every connection at once, like a crashed nsqd."""
        ls, self._listener = self._listener, None
        if ls:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            try:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()
        for t in self._threads:
            t.join(2)
        self._threads = []

    stop = kill

    def close(self) -> None:
        self.kill()

    # ---- protocol ------------------------------------------------------------------
    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                conn, _ = ls.accept()
            except OSError:
                return
            with self._lock:
                if self._listener is not ls:
                    conn.close()
                    return
                self._conns.add(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True, name="nsqd-double-conn")
            t.start()
            self._threads.append(t)

    @staticmethod
    def _frame(kind: int, data: bytes) -> bytes:
        return struct.pack(">ii", 4 + len(data), kind) + data

    def _serve(self, conn: socket.socket) -> None:
        buf = bytearray()
        wlock = threading.Lock()
        missed = [0]
        alive = [True]

        def send(kind: int, data: bytes) -> None:
            with wlock:
                conn.sendall(self._frame(kind, data))

        def heartbeat() -> None:
            while alive[0]:
                time.sleep(self.heartbeat_interval)
                if not alive[0]:
                    return
                if missed[0] >= 2:
                    alive[0] = False
                    try:
                        conn.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                missed[0] += 1
                try:
                    send(FRAME_RESPONSE, b"_heartbeat_")
                except OSError:
                    return

        def read_exact(n: int) -> bytes:
            while len(buf) < n:
                chunk = conn.recv(65536)
                if not chunk:
                    raise _Closed
                buf.extend(chunk)
            out = bytes(buf[:n])
            del buf[:n]
            return out

        def read_line() -> bytes:
            while True:
                i = buf.find(b"\n")
                if i >= 0:
                    line = bytes(buf[:i])
                    del buf[:i + 1]
                    return line
                if len(buf) > 4096:
                    raise ValueError("command line too long")
                chunk = conn.recv(65536)
                if not chunk:
                    raise _Closed
                buf.extend(chunk)

        def fail(code: str, msg: str, fatal: bool) -> None:
            send(FRAME_ERROR, f"{code} {msg}".encode())
            if fatal:
                raise _Closed

        try:
            if read_exact(4) != b"  V2":
                fail("E_BAD_PROTOCOL", "unsupported protocol version", True)
            threading.Thread(target=heartbeat, daemon=True, name="nsqd-double-hb").start()
            while alive[0]:
                parts = read_line().rstrip(b"\r").split(b" ")
                cmd = parts[0]
                missed[0] = 0  # any command proves the client is alive (nsqd resets on reads)
                if cmd == b"NOP":
                    continue
                if cmd == b"CLS":
                    send(FRAME_RESPONSE, b"CLOSE_WAIT")
                    raise _Closed
                if cmd == b"IDENTIFY":
                    (size,) = struct.unpack(">i", read_exact(4))
                    read_exact(size)
                    send(FRAME_RESPONSE, b"OK")
                    continue
                if cmd not in (b"PUB", b"MPUB"):
                    fail("E_INVALID", f"invalid command {cmd[:32]!r}", True)
                if len(parts) != 2:
                    fail("E_INVALID", f"{cmd.decode()} insufficient number of parameters", True)
                topic = parts[1].decode(errors="replace")
                (size,) = struct.unpack(">i", read_exact(4))
                if cmd == b"PUB":
                    if size <= 0 or size > self.max_msg_size:
                        fail("E_BAD_MESSAGE", f"PUB invalid message body size {size}", True)
                    msgs = [read_exact(size)]
                else:
                    if size <= 0 or size > self.max_body_size:
                        fail("E_BAD_BODY", f"MPUB invalid body size {size}", True)
                    body = read_exact(size)
                    (count,) = struct.unpack(">i", body[:4])
                    msgs, pos, bad = [], 4, False
                    for _ in range(count):
                        (n,) = struct.unpack(">i", body[pos:pos + 4])
                        if n <= 0 or n > self.max_msg_size:
                            bad = True
                        msgs.append(body[pos + 4:pos + 4 + n])
                        pos += 4 + n
                    if bad or pos != len(body):
                        fail("E_BAD_MESSAGE", "MPUB invalid message(s)", True)
                if not (1 <= len(topic) <= 64 and TOPIC_RE.match(topic)):
                    fail("E_BAD_TOPIC", f"{cmd.decode()} topic name {topic!r} is not valid", True)
                with self._lock:
                    self.topics.setdefault(topic, []).extend(msgs)
                send(FRAME_RESPONSE, b"OK")
        except (_Closed, OSError, ValueError, struct.error):
            pass
        finally:
            alive[0] = False
            with self._lock:
                self._conns.discard(conn)
            conn.close()
