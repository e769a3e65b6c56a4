"""-collector iter: read a namespace through the BPF TCP iterator (xtcp2/ebpf/tcp_iter.py)
and turn its records into the inet_diag decoder's columns.

Only `bpf_iter_create()` runs inside the namespace (on the NetnsEnterer thread); the
fd is read from the caller's thread into reused buffers, viewed as numpy records: no
netlink, no attribute parsing. `to_columns()` gives every column
`xtcp2.netlink.decode.decode_messages` gives, with the same names and dtypes, and only
where inet_diag would have sent the attribute, so the encoder writes the same records
whichever collector ran.
"""
from __future__ import annotations

import errno
import logging
import mmap
import os
import queue
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..columns import BytesColumn, Columns, unique
from ..ebpf.tcp_info import TO_RECORD
from ..ebpf.tcp_iter import (CC_BBR, CC_DCTCP, CC_VEGAS, DEFAULT_BUFFER, ITER_DTYPE, KIND_FULL,
                             MEMINFO_FROM_SKMEMINFO, REC_SIZE, TcpIterProgram, object_path)
from ..errors import Xtcp2Error
from ..netlink import constants as c
from ..netlink import layouts as L
from ..netns.sockstat import has_tcp_sockets

log = logging.getLogger(__name__)

# record column -> the numpy dtype the inet_diag decoder gives it
DIAG_DTYPE: dict[str, np.dtype] = {name: np.dtype(fmt) for name, _, fmt in L.TCP_INFO}
DIAG_END: dict[str, int] = {name: off + np.dtype(fmt).itemsize for name, off, fmt in L.TCP_INFO}
DIAG_DTYPE.update({name: np.dtype(np.uint8) for name, *_ in L.TCP_INFO_BITFIELDS})


# bpf_seq_read() hands out at most one seq_file buffer (8 pages) per read(). readv()
# goes on to its next iovec only after a full one, so iovecs of exactly the whole
# records that fit that buffer let one syscall fill a whole read buffer: ~10 syscalls
# per 100,000 sockets instead of ~1,300, and as few GIL hand-overs on the reader thread.
# The kernel also stops at a full iovec before running the program on the next
# socket, where an overflowing record would be built, dropped and built again.
# Another buffer size only makes reads shorter: the loops below take any length.
SEQ_BUFFER = os.sysconf("SC_PAGE_SIZE") << 3
_SEGMENT = max((SEQ_BUFFER - 1) // REC_SIZE, 1) * REC_SIZE
_IOV_MAX = 1024


def _segments(mv: memoryview, start: int, end: int) -> list[memoryview]:
    return [mv[i:min(i + _SEGMENT, end)] for i in range(start, end, _SEGMENT)][:_IOV_MAX]


def read_records(fd: int, buf: bytearray) -> Iterator[np.ndarray]:
    """Records read from an iterator fd, a chunk at a time: structured views into buf,
    valid until the next chunk is asked for. The fd is left open."""
    mv = memoryview(buf)
    size = len(buf) - len(buf) % REC_SIZE
    used = 0
    while True:
        n = os.readv(fd, _segments(mv, used, size))
        used += n
        if n and used < size:
            continue
        whole = used - used % REC_SIZE
        if whole:
            yield np.frombuffer(buf, ITER_DTYPE, count=whole // REC_SIZE)
        if n == 0:
            if used != whole:
                raise OSError(errno.EIO, f"BPF iterator: {used - whole} trailing bytes, not a whole record")
            return
        tail = used - whole
        mv[:tail] = mv[whole:used]
        used = tail


def _cong(names: np.ndarray, has: np.ndarray) -> tuple[BytesColumn, np.ndarray]:
    """congestion_algorithm_string / _enum as the decoder builds them (rows without a
    name stay empty)."""
    n = len(names)
    data = np.frombuffer(names.tobytes(), np.uint8).reshape(n, 16)[:, :L.CONG_NAME_MAX].copy()
    zero = data == 0
    lengths = np.where(zero.any(axis=1), zero.argmax(axis=1), L.CONG_NAME_MAX).astype(np.uint8)
    enum = np.zeros(n, np.uint8)
    # a handful of distinct names: one u64 key per row, then one lookup per key
    halves = data.view(np.uint64)
    key = halves[:, 0] ^ (halves[:, 1] * np.uint64(0x9E3779B97F4A7C15))
    for k in unique(key[has]).tolist():
        rows = key == k
        name = data[int(np.argmax(rows))].tobytes().split(b"\0", 1)[0]
        enum[rows] = L.CONGESTION_ENUM.get(name, 0)
    if not has.all():
        data[~has] = 0
        lengths[~has] = 0
        enum[~has] = 0
    return BytesColumn(data, lengths), enum


def _leaf_offsets(dt: np.dtype, base: int = 0, prefix: str = "") -> dict[str, tuple[int, np.dtype]]:
    out = {}
    for name in dt.names:
        sub, off = dt.fields[name][:2]
        if sub.names is not None:
            out.update(_leaf_offsets(sub, base + off, f"{prefix}{name}."))
        else:
            out[prefix + name] = (base + off, sub)
    return out


_OFFSETS = _leaf_offsets(ITER_DTYPE)
_WORDS = REC_SIZE // 4


class _Words:
    """The records of one chunk transposed into rows of u32 words: one cache-friendly
    pass, instead of one strided pass over the whole chunk per column (10x faster at
    ~100 columns). A 4-byte field is then a contiguous row (no copy); the others are
    shifted out of their word, or joined from two."""

    BLOCK = 512  # rows per transposed block: source and target stay in cache

    def __init__(self, recs: np.ndarray) -> None:
        n = len(recs)
        words = np.frombuffer(recs, "<u4").reshape(n, _WORDS)
        self.t = np.empty((_WORDS, n), np.uint32)
        for i in range(0, n, self.BLOCK):
            self.t[:, i:i + self.BLOCK] = words[i:i + self.BLOCK].T

    def get(self, name: str, index: int = 0) -> np.ndarray:
        off, dt = _OFFSETS[name]
        size = dt.itemsize if dt.subdtype is None else dt.subdtype[0].itemsize
        off += index * size
        w, shift = off >> 2, (off & 3) * 8
        if size == 4:
            return self.t[w]
        if size == 8:
            return self.t[w].astype(np.uint64) | (self.t[w + 1].astype(np.uint64) << np.uint64(32))
        mask = (1 << (size * 8)) - 1
        return ((self.t[w] >> shift) & mask).astype(np.uint8 if size == 1 else "<u2")


_info_len: int | None = None


def kernel_tcp_info_len() -> int:
    """sizeof(struct tcp_info) of the running kernel (232 on 6.1, 248 on 6.8+): the
    kernel copies no more than that into a larger getsockopt buffer."""
    global _info_len
    if _info_len is None:
        with socket.socket() as s:
            _info_len = len(s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 1024))
    return _info_len


def to_columns(recs: np.ndarray, wanted: frozenset[int] | None = None) -> Columns:
    """Columns from iterator records, as decode_messages gives them for the same
    sockets: same names, same dtypes, attribute columns only where inet_diag would
    send the attribute (full sockets; TCLASS on AF_INET6; BBR info below TIME_WAIT).
    Never a view into recs: the caller's buffer is reused.

    The program zeroes each record and fills attribute fields for full sockets only
    (cc_info for its cc_kind only), so most columns need no masking by kind."""
    n = len(recs)
    cols = Columns(n)
    if n == 0:
        return cols

    def want(attr: int) -> bool:
        return wanted is None or attr in wanted

    w = _Words(recs)
    fam = w.get("family")
    for col, field in (("inet_diag_msg_family", "family"), ("inet_diag_msg_state", "state"),
                       ("inet_diag_msg_timer", "timer"), ("inet_diag_msg_retrans", "retrans"),
                       ("inet_diag_msg_socket_interface", "ifindex"), ("inet_diag_msg_socket_cookie", "cookie"),
                       ("inet_diag_msg_expires", "expires"), ("inet_diag_msg_rqueue", "rqueue"),
                       ("inet_diag_msg_wqueue", "wqueue"), ("inet_diag_msg_uid", "uid"),
                       ("inet_diag_msg_inode", "inode")):
        cols[col] = w.get(field)
    # network order, as inet_diag_msg holds them: the same two bytes read big-endian
    cols["inet_diag_msg_socket_source_port"] = w.get("sport").view(">u2")
    cols["inet_diag_msg_socket_destination_port"] = w.get("dport").view(">u2")
    alen = np.where(fam == c.AF_INET6, 16, 4).astype(np.uint8)
    cols["inet_diag_msg_socket_source"] = BytesColumn(recs["saddr"].copy(), alen)
    cols["inet_diag_msg_socket_destination"] = BytesColumn(recs["daddr"].copy(), alen.copy())

    full = w.get("kind") == KIND_FULL
    if not full.any():
        return cols  # TIME_WAIT and request sockets carry no attributes
    every = bool(full.all())

    if want(c.INET_DIAG_INFO):
        info_len = kernel_tcp_info_len()
        for src, col in TO_RECORD.items():
            if DIAG_END.get(col, 0) > info_len:
                continue  # this kernel's struct tcp_info ends before it: inet_diag omits it too
            v = w.get("ti." + src)
            cols[col] = v if v.dtype == DIAG_DTYPE[col] else v.astype(DIAG_DTYPE[col])
        state = cols["inet_diag_msg_state"]
        cols["tcp_info_state"] = state if every else np.where(full, state, 0).astype(np.uint8)
        # fields tcp_get_info() always leaves 0 (tcpi_fackets, tcpi_last_ack_sent)
        cols["tcp_info_fackets"] = np.zeros(n, "<u4")
        cols["tcp_info_last_ack_sent"] = np.zeros(n, "<u4")
    if want(c.INET_DIAG_MEMINFO):
        for (name, _, _), i in zip(L.MEMINFO, MEMINFO_FROM_SKMEMINFO):
            cols[name] = w.get("skmeminfo", i)
    if want(c.INET_DIAG_SKMEMINFO):
        for i, (name, _, _) in enumerate(L.SKMEMINFO):
            cols[name] = w.get("skmeminfo", i)
    if want(c.INET_DIAG_SHUTDOWN):
        cols["shutdown_state"] = w.get("shutdown")
    if want(c.INET_DIAG_TOS):
        cols["type_of_service"] = w.get("tos")
    if want(c.INET_DIAG_TCLASS) and bool((full & (fam == c.AF_INET6)).any()):
        cols["traffic_class"] = w.get("tclass")
    if want(c.INET_DIAG_CLASS_ID):
        cols["class_id"] = w.get("class_id")
    if want(c.INET_DIAG_CGROUP_ID):
        cols["c_group"] = w.get("cgroup_id")
    if want(c.INET_DIAG_SOCKOPT):
        cols["sock_opt"] = w.get("sockopt")
    if want(c.INET_DIAG_CONG):
        names = recs["ti"]["ca_name"]
        has = full & (names != b"")
        if has.any():
            cols["congestion_algorithm_string"], cols["congestion_algorithm_enum"] = _cong(names, has)
    cc = w.get("cc_kind")
    for kind_id, attr, layout in ((CC_BBR, c.INET_DIAG_BBRINFO, L.BBRINFO),
                                  (CC_DCTCP, c.INET_DIAG_DCTCPINFO, L.DCTCPINFO),
                                  (CC_VEGAS, c.INET_DIAG_VEGASINFO, L.VEGASINFO)):
        if not want(attr):
            continue
        mine = cc == kind_id
        if not mine.any():
            continue
        whole = bool(mine.all())
        raw = np.stack([w.get("cc_info", i) for i in range(5)], axis=1).view(np.uint8)  # (n, 20): the union
        for name, off, fmt in layout:
            dt = np.dtype(fmt)
            vals = raw[:, off:off + dt.itemsize].copy().view(dt).reshape(-1)
            cols[name] = vals if whole else np.where(mine, vals, 0).astype(dt)
    return cols


class IterCollector:
    """Reads one namespace through the iterator: the narrow interface the poll
    collector uses. `columns()` yields Columns chunks (like one netlink chunk each)."""

    # records -> columns on the reader thread, after each read: the worker that
    # consumes the chunks only encodes (the longer half). Benchmarks turn it off.
    convert_on_reader = True

    def __init__(self, program: TcpIterProgram, buffer_bytes: int = DEFAULT_BUFFER) -> None:
        self.program = program
        self.buffer_bytes = max(buffer_bytes, REC_SIZE * 16)

    def open_here(self, skip_empty: bool = True) -> int | None:
        """An iterator fd for the calling thread's namespace; None when it has no TCP
        socket (skip_empty). Run this inside the namespace."""
        if skip_empty and not has_tcp_sockets():
            return None
        return self.program.create_fd()

    def columns(self, run_in: Callable[[Callable[[], int | None]], int | None],
                wanted: frozenset[int] | None = None, skip_empty: bool = True,
                on_skip: Callable[[], None] | None = None) -> Iterator[Columns]:
        """Columns of every TCP socket of a namespace. run_in(fn) runs fn inside the
        namespace (NetnsEnterer.run_in bound to its path, or a plain call for the
        daemon's own). Only the fd is created there; reading happens here.
        on_skip() is called when sockstat showed the namespace empty."""
        fd = run_in(lambda: self.open_here(skip_empty))
        if fd is None:
            if on_skip is not None:
                on_skip()
            return
        try:
            yield from self._read(fd, wanted)
        finally:
            os.close(fd)

    def _read(self, fd: int, wanted: frozenset[int] | None) -> Iterator[Columns]:
        """A namespace that fits one buffer (nearly all) is read inline. A bigger one
        continues on a reader thread, which reads the next buffer and converts it
        while the caller encodes the previous one (read() and numpy's loops release
        the GIL): the poll costs about the larger of the two instead of their sum."""
        free = _buffers(self.buffer_bytes)
        buf = free.get()
        count, carry, eof = _fill(fd, buf, b"")
        if eof:
            try:
                if count:
                    yield to_columns(np.frombuffer(buf, ITER_DTYPE, count=count), wanted)
            finally:
                free.put(buf)
            return
        # converted chunks wait here; one at most, so memory stays a few chunks
        full: queue.Queue = queue.Queue(maxsize=1 if self.convert_on_reader else 0)
        stop = threading.Event()

        convert = self.convert_on_reader

        def reader(carry: bytes) -> None:
            try:
                while not stop.is_set():
                    b = free.get()
                    n, carry, done = _fill(fd, b, carry)
                    if convert:
                        try:
                            item = to_columns(np.frombuffer(b, ITER_DTYPE, count=n), wanted) if n else None
                        finally:
                            free.put(b)
                        if item is not None:
                            full.put(item)
                    else:
                        full.put((b, n))
                    if done:
                        break
            except BaseException as e:  # handed to the consumer, raised there
                full.put(e)
            full.put(None)

        t = threading.Thread(target=reader, args=(carry,), name=f"{threading.current_thread().name}-iter", daemon=True)
        t.start()
        try:
            cols = to_columns(np.frombuffer(buf, ITER_DTYPE, count=count), wanted)
            free.put(buf)
            yield cols
            while (item := full.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                if isinstance(item, Columns):
                    yield item
                    continue
                b, n = item
                cols = to_columns(np.frombuffer(b, ITER_DTYPE, count=n), wanted) if n else None
                free.put(b)
                if cols is not None:
                    yield cols
        finally:
            stop.set()
            while t.is_alive():  # hand buffers back so the reader never blocks forever
                try:
                    item = full.get(timeout=0.05)
                except queue.Empty:
                    continue
                if isinstance(item, tuple):
                    free.put(item[0])
            t.join()
            # what the reader queued just before it ended is not drained by the loop above
            while not full.empty():
                item = full.get_nowait()
                if isinstance(item, tuple):
                    free.put(item[0])

    def close(self) -> None:
        self.program.close()


_local = threading.local()
# one being filled, one being converted: to_columns() copies out, so a buffer is free
# again before its columns are encoded, and a third would only let the reader run
# further ahead (one more buffer per netlinker thread)
BUFFERS_PER_THREAD = 2


def _buffers(size: int) -> queue.SimpleQueue:
    """This thread's reused read buffers (the poll collector reads namespaces in parallel).
    Anonymous mappings: a page counts in RSS only once the kernel writes records into
    it, so the threads that only ever read small namespaces stay small."""
    free = getattr(_local, "free", None)
    if free is None or getattr(_local, "size", 0) != size:
        free = _local.free = queue.SimpleQueue()
        _local.size = size
        for _ in range(BUFFERS_PER_THREAD):
            free.put(mmap.mmap(-1, size))
    return free


def _fill(fd: int, buf: bytearray, carry: bytes) -> tuple[int, bytes, bool]:
    """Fill buf from fd, after the partial record `carry` left by the previous buffer:
    (whole records in buf, the partial record after them, end of the walk)."""
    mv = memoryview(buf)
    size = len(buf) - len(buf) % REC_SIZE
    used = len(carry)
    mv[:used] = carry
    eof = False
    while used < size:
        n = os.readv(fd, _segments(mv, used, size))
        if n == 0:
            eof = True
            break
        used += n
    whole = used - used % REC_SIZE
    tail = bytes(mv[whole:used])
    if eof and tail:
        raise OSError(errno.EIO, f"BPF iterator: {len(tail)} trailing bytes, not a whole record")
    return whole // REC_SIZE, tail, eof


def select_backend(collector: str, path: Path | None = None) -> tuple[IterCollector | None, str]:
    """-collector policy: (IterCollector or None for inet_diag, line to log).
    iter that cannot load raises Xtcp2Error with the reason; auto falls back, saying why."""
    if collector == "netlink":
        return None, "collector netlink (inet_diag)"
    try:
        prog = TcpIterProgram.load(path)
        os.close(prog.create_fd())  # the kernel accepts an iterator here
    except (Xtcp2Error, OSError) as e:
        if collector == "iter":
            raise Xtcp2Error(f"-collector iter cannot run here: {e}") from None
        return None, f"collector auto: using netlink (BPF iterator unavailable: {e})"
    return IterCollector(prog), f"collector {collector}: using the BPF TCP iterator ({path or object_path()})"
