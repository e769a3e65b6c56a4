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

TLS: tls=1 (or the server's tls_required) upgrades the connection after INFO, as
NATS clients do; caFile=PATH verifies the server (default: the system store),
certFile=PATH&keyFile=PATH present a client certificate (verify: true servers).

Credentials come from the environment, never the command line (the first one set wins):
    XTCP2_NATS_CREDS          a .creds file (user JWT + NKey seed, decentralized auth)
    XTCP2_NATS_NKEY_SEED_FILE a file holding an NKey seed (SU...), or XTCP2_NATS_NKEY_SEED; signs the nonce
    XTCP2_NATS_TOKEN          (or XTCP2_NATS_TOKEN_FILE) a token
    XTCP2_NATS_USER + XTCP2_NATS_PASSWORD (or XTCP2_NATS_PASSWORD_FILE)
NKey signatures need the `nkeys` package (pip install 'xtcp2[nats]').

We keep this small client rather than nats-py: it is synchronous, so it runs in the
queue's sender thread (nats-py needs an asyncio loop and a bridge back to the thread),
and it already does exactly what the destination needs (PING-confirmed batches,
JetStream acks with stable Nats-Msg-Id de-duplication); TLS and the four credential
kinds are a CONNECT field or a socket wrap each.
"""
from __future__ import annotations

import itertools
import base64
import json
import os
import re
import secrets
import socket
import ssl
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


def _env_secret(name: str) -> str:
    value = os.environ.get(name, "")
    path = os.environ.get(f"{name}_FILE", "")
    if value or not path:
        return value
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError as e:
        raise DestinationError(f"nats: {name}_FILE {path}: {e.strerror or e}") from None


_CREDS_RE = re.compile(r"-{3,}[^\n]*BEGIN[^\n]*-{3,}\s*\n\s*(\S+)\s*\n\s*-{3,}[^\n]*END[^\n]*-{3,}")


class NatsAuth:
    """What CONNECT carries: a JWT + nonce signature, an NKey + signature, a token, or
    user/password."""

    def __init__(self, kind: str = "", jwt: str = "", seed: bytes = b"", token: str = "", user: str = "",
                 password: str = "") -> None:
        self.kind, self.jwt, self.seed, self.token, self.user, self.password = kind, jwt, seed, token, user, password
        if seed:
            try:
                import nkeys
            except ImportError:
                raise DestinationError("nats: NKey and .creds authentication need the nkeys package "
                                       "(pip install 'xtcp2[nats]')") from None
            try:
                self._kp = nkeys.from_seed(seed)
            except Exception as e:  # noqa: BLE001 - nkeys raises its own error types
                raise DestinationError(f"nats: not a valid NKey seed ({type(e).__name__})") from None

    def connect_fields(self, nonce: str) -> dict:
        if self.seed:
            if not nonce:
                raise DestinationError("nats: the server sent no nonce to sign (is it configured for NKeys/JWT?)")
            sig = base64.urlsafe_b64encode(self._kp.sign(nonce.encode())).rstrip(b"=").decode()
            out = {"sig": sig}
            if self.jwt:
                out["jwt"] = self.jwt
            else:
                out["nkey"] = self._kp.public_key.decode()
            return out
        if self.token:
            return {"auth_token": self.token}
        if self.user:
            return {"user": self.user, "pass": self.password}
        return {}


def nats_credentials() -> NatsAuth:
    creds = os.environ.get("XTCP2_NATS_CREDS", "")
    if creds:
        try:
            with open(creds, encoding="utf-8") as f:
                blocks = _CREDS_RE.findall(f.read())
        except OSError as e:
            raise DestinationError(f"nats: XTCP2_NATS_CREDS {creds}: {e.strerror or e}") from None
        if len(blocks) < 2:
            raise DestinationError(f"nats: {creds} is not a .creds file (needs a JWT and an NKey seed block)")
        return NatsAuth("creds", jwt=blocks[0], seed=blocks[1].encode())
    seed = _env_secret("XTCP2_NATS_NKEY_SEED")
    if seed:
        return NatsAuth("nkey", seed=seed.encode())
    token = _env_secret("XTCP2_NATS_TOKEN")
    if token:
        return NatsAuth("token", token=token)
    user = os.environ.get("XTCP2_NATS_USER", "")
    if user:
        return NatsAuth("user", user=user, password=_env_secret("XTCP2_NATS_PASSWORD"))
    return NatsAuth()


@register("nats")
class NatsDestination(QueuedDestination):
    batch_max_items = 200
    batch_max_bytes = 4 << 20

    def __init__(self, address: str, config) -> None:
        hostport, _, query = address.partition("?")
        opts = parse_options("nats", query, {"subject", "jetstream", "ackTimeout", "tls", "caFile", "certFile",
                                             "keyFile"})
        super().__init__(address, config, opts)
        self.host, self.port = split_host_port("nats", hostport, 4222)
        self.subject = opts.get("subject", config.topic) or "xtcp"
        if not SUBJECT_RE.match(self.subject):
            raise DestinationError(f"nats: subject {self.subject!r} is not a valid publish subject")
        self.jetstream = bool(num_option("nats", opts, "jetstream", 0, 0))
        self.ack_timeout = num_option("nats", opts, "ackTimeout", 5.0, 0.1, float)
        self._tls_wanted = opts.get("tls", "0") not in ("0", "false", "") or any(
            k in opts for k in ("caFile", "certFile", "keyFile"))
        self._tls_opts = opts
        for k in ("caFile", "certFile", "keyFile"):
            if k in opts and not (os.path.isfile(opts[k]) and os.access(opts[k], os.R_OK)):
                raise DestinationError(f"nats: {k} {opts[k]} is not a readable file")
        if ("certFile" in opts) != ("keyFile" in opts):
            raise DestinationError("nats: certFile and keyFile go together")
        self._auth = nats_credentials()
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
            if self._tls_wanted or c.info.get("tls_required"):
                self._start_tls(c)
            hello = {"verbose": False, "pedantic": False, "name": f"xtcp2-{self.config.hostname}", "lang": "python",
                     "version": "xtcp2", "protocol": 1, "headers": True, "no_responders": True}
            hello.update(self._auth.connect_fields(c.info.get("nonce", "")))
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

    def _start_tls(self, c: _Conn) -> None:
        if not self._tls_wanted:
            raise DestinationError(f"nats {self.host}:{self.port}: the server requires TLS; add tls=1 (and caFile=)")
        try:
            ctx = ssl.create_default_context(cafile=self._tls_opts.get("caFile"))
            if "certFile" in self._tls_opts:
                ctx.load_cert_chain(self._tls_opts["certFile"], self._tls_opts["keyFile"])
            c.sock = ctx.wrap_socket(c.sock, server_hostname=self.host)
        except (ssl.SSLError, OSError) as e:
            raise DestinationError(f"nats {self.host}:{self.port}: TLS: {getattr(e, 'reason', None) or e}") from None

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
