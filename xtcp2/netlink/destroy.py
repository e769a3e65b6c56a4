"""Final tcp_info of every freed TCP socket: the sock_diag destroy broadcast groups.

The kernel multicasts an inet_diag message (inet_diag_msg + INET_DIAG_INFO tcp_info)
for every TCP socket it frees to NETLINK_SOCK_DIAG sockets joined to
SKNLGRP_INET_TCP_DESTROY / SKNLGRP_INET6_TCP_DESTROY (what `ss -E` shows). The
broadcast goes to the freed socket's namespace only, so one subscriber per namespace.
If the receive buffer overflows the kernel drops messages and the next recv fails
with ENOBUFS: counted, and reported to the caller, which answers with a resync.

A subscriber socket pins its namespace: close it as soon as the namespace is gone
from every discovery source (DestroyWatcher.remove).
"""
from __future__ import annotations

import array
import errno
import select
import socket
from typing import Callable, Hashable

from ..prom_light import Counter, Gauge

import numpy as np

from . import constants as c
from ..columns import Columns
from .decode import decode_messages
from .layouts import INET_DIAG_MSG

SKNLGRP_INET_TCP_DESTROY = 1
SKNLGRP_INET6_TCP_DESTROY = 3
_GROUPS = (1 << (SKNLGRP_INET_TCP_DESTROY - 1)) | (1 << (SKNLGRP_INET6_TCP_DESTROY - 1))
SO_RCVBUFFORCE = 33
SO_ATTACH_BPF = 50
DEFAULT_RCVBUF = 32 << 20
Keep = Callable[[np.ndarray], np.ndarray]  # socket cookies -> mask of messages to decode
_COOKIE_AT = c.NLMSG_HDRLEN + dict((f[0], f[1]) for f in INET_DIAG_MSG)["inet_diag_msg_socket_cookie"]
_U64_BYTES = np.arange(8)

DESTROY_MESSAGES = Counter("xtcp2_destroy_messages_total", "Final socket records received from the sock_diag destroy groups")
DESTROY_OVERRUNS = Counter("xtcp2_destroy_overruns_total",
                           "ENOBUFS on a destroy-group socket: broadcasts were lost (answered with a resync)")
DESTROY_ERRORS = Counter("xtcp2_destroy_errors_total",
                         "Destroy-group sockets that failed (open, recv, truncated, filter attach)", ["kind"])
DESTROY_SOCKETS = Gauge("xtcp2_destroy_sockets", "Open destroy-group subscriber sockets (one per namespace)")


class DestroySubscriber:
    """One sock_diag socket joined to both TCP destroy groups, in the namespace it was opened in."""

    def __init__(self, sock: socket.socket, buf_size: int = 1 << 20) -> None:
        self.sock = sock
        self.buf = bytearray(buf_size)
        self._mv = memoryview(self.buf)
        self._words = self._mv.cast("I")

    @classmethod
    def open(cls, rcvbuf: int = DEFAULT_RCVBUF) -> "DestroySubscriber":
        """Subscribe in the calling thread's current network namespace (needs CAP_NET_ADMIN)."""
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC | socket.SOCK_NONBLOCK,
                          c.NETLINK_SOCK_DIAG)
        try:
            try:  # beyond net.core.rmem_max; needs CAP_NET_ADMIN, else the capped size
                s.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
            except OSError:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            s.bind((0, _GROUPS))
        except OSError:
            s.close()
            raise
        DESTROY_SOCKETS.inc()
        return cls(s)

    def fileno(self) -> int:
        return self.sock.fileno()

    def netns_cookie(self) -> int:
        import struct
        return struct.unpack("=Q", self.sock.getsockopt(socket.SOL_SOCKET, c.SO_NETNS_COOKIE, 8))[0]

    def read(self, max_messages: int = 65536, keep: Keep | None = None) -> tuple[Columns, bool]:
        """Drain what is queued without blocking: (decoded columns, overrun?).

        overrun is True if the kernel reported ENOBUFS (some broadcasts were lost).
        keep(cookies) -> mask selects the messages worth decoding (bpf mode already
        reported most of these sockets: skipping them before the decode is the saving)."""
        offsets = array.array("I")
        used = 0
        overrun = False
        size = len(self.buf)
        while len(offsets) < max_messages and size - used >= 65536:
            try:
                n = self.sock.recv_into(self._mv[used:used + 65536])
            except BlockingIOError:
                break
            except OSError as e:
                if e.errno == errno.ENOBUFS:
                    overrun = True
                    DESTROY_OVERRUNS.inc()
                    continue  # the queue is still there; keep reading what survived
                DESTROY_ERRORS.labels("recv").inc()
                break
            end = used + n
            off = used
            words = self._words
            while off + 16 <= end:
                ln = words[off >> 2]
                if ln < 16 or off + ln > end:
                    DESTROY_ERRORS.labels("truncated").inc()
                    break
                if words[(off >> 2) + 1] & 0xFFFF == c.SOCK_DIAG_BY_FAMILY:
                    offsets.append(off)
                off += (ln + 3) & ~3
            used = (end + 7) & ~7
        if not offsets:
            return Columns(0), overrun
        DESTROY_MESSAGES.inc(len(offsets))
        if keep is not None:
            offs = np.frombuffer(offsets, np.uint32).astype(np.int64)
            raw = np.frombuffer(self.buf, np.uint8)
            # a message too short to hold a cookie gets cookie 0 (kept: the decoder judges it)
            whole = np.frombuffer(self.buf, np.uint32)[offs >> 2] >= _COOKIE_AT + 8
            at = np.where(whole, offs + _COOKIE_AT, 0)
            cookies = np.where(whole, raw[at[:, None] + _U64_BYTES].view("<u8").ravel(), 0)
            offsets = offs[keep(cookies)]
            if not len(offsets):
                return Columns(0), overrun
        cols = decode_messages(self.buf, offsets, used=used)
        return cols, overrun

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.sock.close()
            DESTROY_SOCKETS.dec()


class DestroyWatcher:
    """Destroy subscribers for many namespaces behind one epoll.

    `opener(key)` must return a DestroySubscriber opened inside that namespace (the
    daemon runs DestroySubscriber.open through its namespace-entering thread).
    """

    def __init__(self, filter_fd: int = -1) -> None:
        # a BPF socket filter attached to every subscriber (bpf mode: drops broadcasts
        # of sockets already reported from the ring buffer)
        self.filter_fd = filter_fd
        self._ep = select.epoll()
        self._subs: dict[Hashable, DestroySubscriber] = {}
        self._by_fd: dict[int, Hashable] = {}

    def sync_with(self, table, subscribe: bool = True) -> None:
        """Follow a NamespaceTable: close the subscriber of every namespace that is gone
        (an open socket would keep it alive) and, if `subscribe`, open one in each new one."""
        keys = set(table.by_key)
        for key in self.keys():
            if key not in keys:
                self.remove(key)
        if not subscribe:
            return
        for key, ns in list(table.by_key.items()):
            if key in self.keys():
                continue
            if ns.ref.source == "self":
                self.add(key, DestroySubscriber.open)
            else:
                self.add(key, lambda p=ns.ref.path: table.enter().run_in(p, DestroySubscriber.open))

    def keys(self) -> list[Hashable]:
        return list(self._subs)

    def add(self, key: Hashable, opener: Callable[[], DestroySubscriber]) -> bool:
        if key in self._subs:
            return True
        try:
            sub = opener()
        except OSError:
            DESTROY_ERRORS.labels("open").inc()
            return False
        if self.filter_fd >= 0:
            try:
                sub.sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_BPF, self.filter_fd)
            except OSError:  # unfiltered still works: user space drops the duplicates
                DESTROY_ERRORS.labels("filter").inc()
        self._subs[key] = sub
        self._by_fd[sub.fileno()] = key
        self._ep.register(sub.fileno(), select.EPOLLIN)
        return True

    def remove(self, key: Hashable) -> None:
        sub = self._subs.pop(key, None)
        if sub is None:
            return
        self._by_fd.pop(sub.fileno(), None)
        try:
            self._ep.unregister(sub.fileno())
        except OSError:
            pass
        sub.close()

    def fileno(self) -> int:
        return self._ep.fileno()

    def poll(self, timeout: float = 0.0, keep: Keep | None = None) -> list[tuple[Hashable, Columns, bool]]:
        """(key, columns, overrun) for every namespace with something queued (see read())."""
        out = []
        for fd, _ in self._ep.poll(timeout):
            key = self._by_fd.get(fd)
            if key is None:
                continue
            cols, overrun = self._subs[key].read(keep=keep)
            if cols.n or overrun:
                out.append((key, cols, overrun))
        return out

    def close(self) -> None:
        for key in list(self._subs):
            self.remove(key)
        self._ep.close()
