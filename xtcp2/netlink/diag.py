"""NETLINK_SOCK_DIAG socket: inet_diag dump requests and chunked reads.

A dump's replies are read with recv_into straight into a large reused chunk buffer,
one kernel batch (~32 KiB) after another, so the decoder later sees many batches at
once and can work column-wise. While reading, only the netlink headers are walked
(one word per message) to find message offsets and the end of the dump.
"""
from __future__ import annotations

import array
import errno
import mmap
import socket
import struct
from typing import Callable, Iterator, NamedTuple

import numpy as np

from . import constants as c

_NLMSGHDR = struct.Struct("=IHHII")
# nlmsghdr + inet_diag_req_v2 (family, protocol, ext, pad, states, inet_diag_sockid)
_REQ = struct.Struct("=IHHII BBBxI HH16s16sI II")
_ERRNO = struct.Struct("=i")
_ALIGN = 8  # chunk segments start 8-aligned so every message and attribute is 4-aligned


class NetlinkError(OSError):
    """The kernel answered a request with NLMSG_ERROR."""


class DumpAborted(Exception):
    """A dump stopped before NLMSG_DONE (timeout, ENOBUFS, error). `kind` is the metric label."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class Chunk:
    """Replies of one dump, recv after recv, in one buffer.

    `seg_starts`/`seg_ends` hold where each recv starts and ends; `offsets` (where each
    socket message starts) is filled either while reading (walk_batch) or afterwards,
    for all segments at once, by index_messages().
    """

    __slots__ = ("buf", "offsets", "used", "interrupted", "recvs", "seg_starts", "seg_ends", "indexed", "final")

    def __init__(self, buf: bytearray | mmap.mmap) -> None:
        self.buf = buf
        self.reset()

    def reset(self) -> None:
        self.offsets = array.array("I")
        self.used = 0
        self.interrupted = False    # a message carried NLM_F_DUMP_INTR
        self.recvs = 0
        self.seg_starts = array.array("q")
        self.seg_ends = array.array("q")
        self.indexed = True
        self.final = False          # the dump ended in this chunk

    def message_offsets(self) -> np.ndarray:
        """Start offsets of the socket messages, in kernel order."""
        if not self.indexed:
            index_messages(self)
        return np.frombuffer(self.offsets, dtype=np.uint32)


class SockId(NamedTuple):
    """inet_diag_sockid for an exact lookup. Addresses in network order (4 or 16 bytes)."""

    sport: int
    dport: int
    src: bytes
    dst: bytes
    ifindex: int = 0
    cookie: int | None = None


def build_request(family: int, ext: int, states: int = c.ALL_STATES, seq: int = 1,
                  sockid: SockId | None = None, protocol: int = socket.IPPROTO_TCP) -> bytes:
    """A SOCK_DIAG_BY_FAMILY request: a dump, or an exact lookup when sockid is given."""
    flags = c.NLM_F_REQUEST
    if sockid is None:
        flags |= c.NLM_F_DUMP
        sport = dport = ifindex = 0
        src = dst = bytes(16)
        cookie = (0xFFFFFFFF, 0xFFFFFFFF)  # INET_DIAG_NOCOOKIE
    else:
        sport, dport, ifindex = sockid.sport, sockid.dport, sockid.ifindex
        src, dst = sockid.src.ljust(16, b"\0"), sockid.dst.ljust(16, b"\0")
        ck = 0xFFFFFFFFFFFFFFFF if sockid.cookie is None else sockid.cookie
        cookie = (ck & 0xFFFFFFFF, ck >> 32)
    return _REQ.pack(
        _REQ.size, c.SOCK_DIAG_BY_FAMILY, flags, seq, 0,
        family, protocol, ext & 0xFF, states,
        socket.htons(sport), socket.htons(dport), src, dst, ifindex, *cookie,
    )


class DiagSocket:
    """One sock_diag socket. Opened in a namespace, it reports that namespace's sockets."""

    def __init__(self, sock: socket.socket, recv_size: int = 65536, timeout_ms: int = 1000) -> None:
        self.sock = sock
        self.recv_size = recv_size
        self.seq = 0
        self.capture = None  # callable(bytes, outgoing: bool): -capturePath writer
        sock.settimeout(timeout_ms / 1000 if timeout_ms else None)

    @classmethod
    def open(cls, recv_size: int = 65536, timeout_ms: int = 1000) -> "DiagSocket":
        """A socket in the calling thread's current network namespace."""
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, c.NETLINK_SOCK_DIAG)
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            s.bind((0, 0))
        except OSError:
            s.close()
            raise
        return cls(s, recv_size, timeout_ms)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def netns_cookie(self) -> int:
        """SO_NETNS_COOKIE: a 64-bit namespace id that, unlike the inode, is never reused."""
        return struct.unpack("=Q", self.sock.getsockopt(socket.SOL_SOCKET, c.SO_NETNS_COOKIE, 8))[0]

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFFFFFFFF
        return self.seq

    def dump(self, family: int, ext: int, chunk: Chunk | Callable[[], Chunk], states: int = c.ALL_STATES,
             sockid: SockId | None = None) -> Iterator[Chunk]:
        """Send one request and read all replies into chunks.

        `chunk` is a Chunk to reuse (the caller must consume each yielded chunk
        before advancing the iterator) or a callable returning an empty Chunk, so a
        reader thread can fill one buffer while another thread decodes the last.
        Yields a chunk whenever it is nearly full, and the last one at NLMSG_DONE.
        Raises DumpAborted on timeout / ENOBUFS / garbage, NetlinkError on NLMSG_ERROR.
        """
        if isinstance(chunk, Chunk):
            reuse = chunk

            def source() -> Chunk:
                reuse.reset()
                return reuse
        else:
            source = chunk
        seq = self._next_seq()
        req = build_request(family, ext, states, seq, sockid)
        self.sock.send(req)
        if self.capture:
            self.capture(req, True)
        single = sockid is not None
        want = self.recv_size
        cur = source()
        while True:
            buf = cur.buf
            if len(buf) < 2 * want:
                raise ValueError("chunk buffer must hold at least two recv windows")
            mv = memoryview(buf)
            words = mv.cast("I")
            done = False
            while not done and len(buf) - cur.used >= want:
                start = cur.used
                try:
                    n = self.sock.recv_into(mv[start:start + want])
                except socket.timeout:
                    raise DumpAborted("timeout", f"no reply within {self.sock.gettimeout()} s") from None
                except OSError as e:
                    if e.errno == errno.ENOBUFS:
                        raise DumpAborted("enobufs", "receive buffer overrun, dump lost messages") from None
                    raise DumpAborted("error", f"recv failed: {e.strerror}") from None
                cur.recvs += 1
                end = start + n
                if self.capture:
                    self.capture(bytes(mv[start:end]), False)
                done = self._batch_is_last(buf, words, start, end, cur, single)
                cur.used = (end + _ALIGN - 1) & ~(_ALIGN - 1)
            del words, mv  # release the buffer export before handing the chunk on
            cur.final = done
            yield cur
            if done:
                return
            cur = source()

    @staticmethod
    def _batch_is_last(buf, words, start: int, end: int, chunk: Chunk, single: bool) -> bool:
        """Record the batch; True if it ends the dump.

        NLMSG_DONE is always the last message of its batch and errors come alone, so
        only the batch's first and last headers are looked at. Batches that might
        end the dump are walked message by message (exactly, in Python: rare); the
        others are indexed later, all at once, by index_messages().
        """
        if end - start < 16:
            raise DumpAborted("truncated", f"{end - start}-byte reply")
        first_type = words[(start >> 2) + 1] & 0xFFFF
        tail = end - 20
        maybe_done = (end - start >= 20 and words[tail >> 2] == 20
                      and words[(tail >> 2) + 1] & 0xFFFF == c.NLMSG_DONE)
        if single or maybe_done or first_type != c.SOCK_DIAG_BY_FAMILY:
            if not chunk.indexed:
                index_messages(chunk)
            done = walk_batch(buf, words, start, end, chunk, single)
            return done or (single and len(chunk.offsets) > 0)
        chunk.seg_starts.append(start)
        chunk.seg_ends.append(end)
        chunk.indexed = False
        return False


def index_messages(chunk: Chunk) -> None:
    """Find the socket messages of all pending segments at once.

    The header chains of all segments are followed in lockstep: one numpy step per
    message position (~60 per 32 KiB batch), not one Python step per message.
    """
    if chunk.indexed:
        return
    words = np.frombuffer(chunk.buf, dtype="<u4", count=chunk.used >> 2)
    cur = np.frombuffer(chunk.seg_starts, dtype=np.int64).copy()
    ends = np.frombuffer(chunk.seg_ends, dtype=np.int64)
    found = [np.frombuffer(chunk.offsets, dtype=np.uint32).astype(np.int64)]
    active = np.flatnonzero(cur + 16 <= ends)
    while active.size:
        pos = cur[active]
        w = pos >> 2
        ln = words[w].astype(np.int64)
        tf = words[w + 1]
        bad = (ln < 16) | (pos + ln > ends[active])
        if bad.any():
            i = int(np.argmax(bad))
            raise DumpAborted("truncated", f"bad nlmsg_len {int(ln[i])} at offset {int(pos[i])}")
        typ = tf & 0xFFFF
        flags = tf >> 16
        if (flags & c.NLM_F_DUMP_INTR).any():
            chunk.interrupted = True
        found.append(pos[(typ == c.SOCK_DIAG_BY_FAMILY) & ((flags & c.NLM_F_REQUEST) == 0)])
        stop = (typ == c.NLMSG_DONE) | (typ == c.NLMSG_ERROR)
        cur[active] = pos + ((ln + 3) & ~3)
        active = active[~stop & (cur[active] + 16 <= ends[active])]
    offs = np.sort(np.concatenate(found))
    chunk.offsets = array.array("I", offs.astype(np.uint32).tobytes())
    chunk.seg_starts = array.array("q")
    chunk.seg_ends = array.array("q")
    chunk.indexed = True


def walk_batch(buf, words, start: int, end: int, chunk: Chunk, single: bool = False) -> bool:
    """Record the offsets of the socket messages in buf[start:end]; True at end of dump.

    Only headers are read (one word per message). Requests (NLM_F_REQUEST, seen in
    captures of both directions) are skipped. Raises DumpAborted on a length that does
    not fit, NetlinkError for an NLMSG_ERROR other than an ACK.
    """
    offsets = chunk.offsets
    off = start
    while off + 16 <= end:
        w = off >> 2
        ln = words[w]
        if ln < 16 or off + ln > end:
            raise DumpAborted("truncated", f"bad nlmsg_len {ln} at offset {off - start} of a {end - start}-byte reply")
        kind = words[w + 1] & 0xFFFF
        flags = words[w + 1] >> 16
        if kind == c.SOCK_DIAG_BY_FAMILY:
            if not flags & c.NLM_F_REQUEST:
                offsets.append(off)
                if flags & c.NLM_F_DUMP_INTR:
                    chunk.interrupted = True
        elif kind == c.NLMSG_DONE:
            if flags & c.NLM_F_DUMP_INTR:
                chunk.interrupted = True
            return True
        elif kind == c.NLMSG_ERROR:
            err = -_ERRNO.unpack_from(buf, off + 16)[0] if ln >= 20 else 0
            if err == 0 or (single and err == errno.ENOENT):
                return True   # an ACK, or an exact lookup of a socket that is gone
            raise NetlinkError(err, f"sock_diag request failed: {errno.errorcode.get(err, err)}")
        off += (ln + 3) & ~3
    return False


def new_chunk(size: int = 4 << 20) -> Chunk:
    """An anonymous mapping, not a bytearray: its pages count in RSS only once a reply
    lands in them, so a chunk that only ever holds exact lookups or small dumps costs
    a few pages, not 4 MiB."""
    return Chunk(mmap.mmap(-1, size))
