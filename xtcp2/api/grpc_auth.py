"""Who may use the gRPC API: the daemon runs as root, its API must not make others root.

ConfigService (Get too: the config names servers and paths) and XTCPFlatRecordService
(every socket of every namespace) are for root and the uids/groups the operator lists
(-grpcAllowUid, -grpcAllowGid); health and reflection stay open.

How a caller is identified depends on the listener:

- loopback TCP (the default 127.0.0.1:8889, what upstream clients use): the kernel says
  who owns the client's socket. The peer's address and port (context.peer()) plus our
  listening address and port are the connection's 4-tuple; an exact inet_diag lookup
  of it in our own namespace returns the client socket's `idiag_uid`. A socket's owner
  is fixed when it is created, so an unprivileged user cannot claim root's uid. Each
  call looks up again (one netlink round trip, tens of microseconds): a cache keyed by
  address and port would hand root's answer to whoever reuses root's port next.
- `unix:/PATH` (-grpcListen unix:/run/xtcp2/grpc.sock): the socket file is mode 0600
  in a directory only root can enter, so whoever connects is root.
- any other address: refused at start unless a bearer token is configured
  (-grpcTokenFile, or the variable XTCP2_GRPC_TOKEN); then protected calls need the
  metadata `authorization: Bearer <token>`. The token also works on the other listeners.

Refusals are PERMISSION_DENIED (UNAUTHENTICATED for a missing token) with one line,
counted in xtcp2_grpc_denied_total{method}.
"""
from __future__ import annotations

import grp
import hmac
import inspect
import ipaddress
import logging
import os
import pwd
import socket
import stat
import struct
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

import grpc
from prometheus_client import Counter

from ..config import Config
from ..errors import Xtcp2Error
from ..netlink.diag import DiagSocket, DumpAborted, NetlinkError, SockId, new_chunk

log = logging.getLogger(__name__)

DENIED = Counter("xtcp2_grpc_denied_total", "gRPC calls refused: caller not allowed, or a path outside -fileDestDir",
                 ["method"])

OPEN_SERVICES = ("grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection",
                 "grpc.reflection.v1.ServerReflection")
TOKEN_MIN_CHARS = 16
GROUP_CACHE_S = 60.0
DENY_LOG_EVERY_S = 10.0

_TCP_ESTABLISHED = 1
_V4_MAPPED = bytes(10) + b"\xff\xff"
# inet_diag_msg after the 16-byte nlmsghdr: family, state, timer, retrans, sockid, expires, rqueue, wqueue, uid
_DIAG_MSG = struct.Struct("=BBBB HH16s16s I8s IIII")


def is_unix(listen: str) -> bool:
    return listen.startswith("unix:")


def is_loopback(listen: str) -> bool:
    host = listen.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_peer(peer: str) -> tuple[int, bytes, int] | None:
    """'ipv4:127.0.0.1:5000' / 'ipv6:[::1]:5000' (possibly %-encoded) -> (family, packed address, port)."""
    kind, _, rest = unquote(peer).partition(":")
    host, _, port = rest.rpartition(":")
    family = {"ipv4": socket.AF_INET, "ipv6": socket.AF_INET6}.get(kind)
    if family is None or not port.isdigit():
        return None
    try:
        return family, socket.inet_pton(family, host.strip("[]")), int(port)
    except OSError:
        return None


class PeerUidLookup:
    """uid owning the client end of a loopback connection to our listener, from inet_diag."""

    def __init__(self, listen_host: str) -> None:
        host = listen_host.strip("[]")
        if host == "localhost":
            self._local = {socket.AF_INET: socket.inet_pton(socket.AF_INET, "127.0.0.1"),
                           socket.AF_INET6: socket.inet_pton(socket.AF_INET6, "::1")}
        else:
            ip = ipaddress.ip_address(host)
            fam = socket.AF_INET if ip.version == 4 else socket.AF_INET6
            self._local = {fam: ip.packed}
        self.port = 0  # set once bound
        self._diag: DiagSocket | None = None
        self._chunk = new_chunk(64 * 1024)
        self._lock = threading.Lock()

    def close(self) -> None:
        if self._diag is not None:
            self._diag.close()
            self._diag = None

    def uid(self, peer: str) -> int | None:
        """The owner's uid, or None when the peer is not an established socket of ours."""
        parsed = parse_peer(peer)
        if parsed is None or not self.port:
            return None
        family, addr, cport = parsed
        local = self._local.get(family)
        if local is None:
            return None
        want = SockId(sport=cport, dport=self.port, src=addr, dst=local)
        with self._lock:
            try:
                if self._diag is None:
                    # opened by the gRPC thread, which never leaves the daemon's own namespace
                    self._diag = DiagSocket.open(recv_size=16 * 1024, timeout_ms=1000)
                for chunk in self._diag.dump(family, 0, self._chunk, sockid=want):
                    for off in chunk.message_offsets():
                        got = self._match(chunk.buf, int(off), family, want)
                        if got is not None:
                            return got
            except (DumpAborted, NetlinkError, OSError) as e:
                log.warning("gRPC peer lookup for %s failed: %s", peer, e)
                self.close()
        return None

    @staticmethod
    def _match(buf: bytearray, off: int, family: int, want: SockId) -> int | None:
        fam, state, _, _, sport, dport, src, dst, _, _, _, _, _, uid = _DIAG_MSG.unpack_from(buf, off + 16)
        if family == socket.AF_INET:
            if fam == socket.AF_INET6 and src[:12] == _V4_MAPPED and dst[:12] == _V4_MAPPED:
                src, dst = src[12:], dst[12:]  # a dual-stack client socket (gRPC's own) talking IPv4
            else:
                src, dst = src[:4], dst[:4]
        # the lookup falls back to a listener on the port: only the exact connection counts
        if (state != _TCP_ESTABLISHED or socket.ntohs(sport) != want.sport or socket.ntohs(dport) != want.dport
                or src != want.src or dst != want.dst):
            return None
        return uid


def prepare_unix_listener(path: str) -> None:
    """Make `path`'s directory root-only (created 0700 if missing) and clear a stale socket.

    The directory, not the socket's mode, is what keeps others out: the socket file is
    created with the umask's mode before it can be chmod-ed.
    """
    if not os.path.isabs(path):
        raise Xtcp2Error(f"gRPC: unix socket path must be absolute, not {path!r}")
    parent = os.path.dirname(path)
    try:
        os.makedirs(parent, mode=0o700, exist_ok=True)
        st = os.lstat(parent)
    except OSError as e:
        raise Xtcp2Error(f"gRPC: cannot create {parent}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o077:
        raise Xtcp2Error(f"gRPC: {parent} must be a directory owned by root with mode 0700 "
                         f"(is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)  # left by a previous run; the directory is ours alone
    except FileNotFoundError:
        pass


def _ids(spec: str, what: str, by_name: Callable[[str], int]) -> frozenset[int]:
    out = set()
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        if item.isdigit():
            out.add(int(item))
            continue
        try:
            out.add(by_name(item))
        except KeyError:
            raise Xtcp2Error(f"gRPC: unknown {what} {item!r} in -grpcAllow{what.capitalize()}") from None
    return frozenset(out)


def read_token(path: str) -> bytes:
    """The bearer token in `path`, which only its owner (root) may read or write."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise Xtcp2Error(f"gRPC: cannot read -grpcTokenFile {path}: {e.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise Xtcp2Error(f"gRPC: -grpcTokenFile {path} is not a regular file")
        if st.st_uid not in (0, os.geteuid()) or st.st_mode & 0o077:
            raise Xtcp2Error(f"gRPC: -grpcTokenFile {path} must be owned by root with mode 0600 "
                             f"(is uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
        token = f.read(4096).strip()
    if len(token) < TOKEN_MIN_CHARS:
        raise Xtcp2Error(f"gRPC: -grpcTokenFile {path} holds a token shorter than {TOKEN_MIN_CHARS} characters")
    return token


TOKEN_ENV = "XTCP2_GRPC_TOKEN"


def configured_token(config: Config, environ=None) -> bytes | None:
    """The bearer token: -grpcTokenFile, or $XTCP2_GRPC_TOKEN (a Kubernetes secret as an
    env var); both at once is a mistake worth a one-line error."""
    environ = os.environ if environ is None else environ
    value = environ.get(TOKEN_ENV, "").strip()
    if config.grpc_token_file and value:
        raise Xtcp2Error(f"gRPC: both -grpcTokenFile and {TOKEN_ENV} are set; give the token one way")
    if config.grpc_token_file:
        return read_token(config.grpc_token_file)
    if not value:
        return None
    if len(value) < TOKEN_MIN_CHARS or any(ord(c) < 33 or ord(c) > 126 for c in value):
        raise Xtcp2Error(f"gRPC: {TOKEN_ENV} must be at least {TOKEN_MIN_CHARS} printable characters without spaces")
    return value.encode()


@dataclass
class Decision:
    ok: bool
    code: grpc.StatusCode = grpc.StatusCode.OK
    message: str = ""


class Authorizer:
    """Decides per call; built from the Config before the listener binds."""

    def __init__(self, config: Config) -> None:
        listen = config.grpc_listen
        self.listen = listen
        self.token = configured_token(config)
        self.allow_uids = frozenset({0}) | _ids(config.grpc_allow_uid, "uid", lambda n: pwd.getpwnam(n).pw_uid)
        self.allow_gids = _ids(config.grpc_allow_gid, "gid", lambda n: grp.getgrnam(n).gr_gid)
        self.lookup: PeerUidLookup | None = None
        if is_unix(listen):
            self.kind = "unix"
        elif is_loopback(listen):
            self.kind = "loopback"
            self.lookup = PeerUidLookup(listen)
        else:
            self.kind = "network"
            if self.token is None:
                raise Xtcp2Error(f"gRPC: refusing to listen on non-loopback address {listen} without "
                                 f"-grpcTokenFile or {TOKEN_ENV} (anyone who can reach it could reconfigure "
                                 f"this root daemon)")
        self._groups: dict[int, tuple[float, frozenset[int]]] = {}
        self._last_log = 0.0
        self._unlogged = 0

    def describe(self) -> str:
        extra = sorted(self.allow_uids - {0})
        who = "root" + (f", uids {','.join(map(str, extra))}" if extra else "") + \
            (f", gids {','.join(map(str, sorted(self.allow_gids)))}" if self.allow_gids else "")
        if self.kind == "unix":
            return "root-only unix socket"
        if self.kind == "network":
            return "bearer token required"
        return f"allowed by socket owner: {who}" + ("; or bearer token" if self.token else "")

    def bound(self, port: int) -> None:
        if self.lookup is not None:
            self.lookup.port = port

    def close(self) -> None:
        if self.lookup is not None:
            self.lookup.close()

    def _gids_of(self, uid: int) -> frozenset[int]:
        now = time.monotonic()
        hit = self._groups.get(uid)
        if hit and now - hit[0] < GROUP_CACHE_S:
            return hit[1]
        try:
            pw = pwd.getpwuid(uid)
            gids = frozenset(os.getgrouplist(pw.pw_name, pw.pw_gid))
        except (KeyError, OSError):
            gids = frozenset()
        self._groups[uid] = (now, gids)
        return gids

    def uid_allowed(self, uid: int) -> bool:
        return uid in self.allow_uids or bool(self.allow_gids and self._gids_of(uid) & self.allow_gids)

    def _token_ok(self, metadata) -> bool | None:
        """True/False when a bearer token was presented, None when none was."""
        for key, value in metadata or ():
            if key == "authorization":
                text = value.decode() if isinstance(value, bytes) else value
                scheme, _, presented = text.partition(" ")
                if scheme.lower() != "bearer" or self.token is None:
                    return False
                return hmac.compare_digest(presented.strip().encode(), self.token)
        return None

    def decide(self, method: str, peer: str, metadata) -> Decision:
        token = self._token_ok(metadata)
        if token:
            return Decision(True)
        if token is False:
            return Decision(False, grpc.StatusCode.UNAUTHENTICATED, f"{method}: wrong bearer token")
        if self.kind == "unix":
            return Decision(True)  # only root can reach the socket
        if self.kind == "network":
            return Decision(False, grpc.StatusCode.UNAUTHENTICATED,
                            f"{method}: this listener needs 'authorization: Bearer <token>' "
                            f"(-grpcTokenFile / {TOKEN_ENV})")
        uid = self.lookup.uid(peer)
        if uid is None:
            return Decision(False, grpc.StatusCode.PERMISSION_DENIED,
                            f"{method}: cannot identify the caller's socket owner; refused")
        if self.uid_allowed(uid):
            return Decision(True)
        return Decision(False, grpc.StatusCode.PERMISSION_DENIED,
                        f"{method}: uid {uid} may not use the xtcp2 API (root only; see -grpcAllowUid/-grpcAllowGid)")

    def log_denied(self, peer: str, message: str) -> None:
        # rate-limited: an unprivileged user must not be able to flood the daemon's log
        now = time.monotonic()
        if now - self._last_log < DENY_LOG_EVERY_S:
            self._unlogged += 1
            return
        more = f" (+{self._unlogged} more since last logged)" if self._unlogged else ""
        log.warning("gRPC refused %s: %s%s", peer, message, more)
        self._last_log, self._unlogged = now, 0


def _guard(behavior: Callable, check: Callable) -> Callable:
    if inspect.isasyncgenfunction(behavior):
        async def stream(request, context):
            await check(context)
            async for item in behavior(request, context):
                yield item
        return stream

    async def call(request, context):
        await check(context)
        return await behavior(request, context)
    return call


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Wraps every protected method's handler so that it first asks the Authorizer."""

    def __init__(self, auth: Authorizer) -> None:
        self.auth = auth

    async def intercept_service(self, continuation, details):
        handler = await continuation(details)
        service, _, method = details.method.lstrip("/").partition("/")
        if handler is None or service in OPEN_SERVICES:
            return handler
        auth = self.auth

        async def check(context) -> None:
            peer = context.peer()
            d = auth.decide(method, peer, context.invocation_metadata())
            if not d.ok:
                DENIED.labels(method).inc()
                auth.log_denied(peer, d.message)
                await context.abort(d.code, d.message)

        kind = ("stream_stream" if handler.request_streaming else "unary_stream") if handler.response_streaming \
            else ("stream_unary" if handler.request_streaming else "unary_unary")
        return handler._replace(**{kind: _guard(getattr(handler, kind), check)})
