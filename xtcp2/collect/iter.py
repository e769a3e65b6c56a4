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
import functools
import logging
import mmap
import os
import queue
import socket
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..columns import BytesColumn, Columns
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
_U4 = np.dtype("<u4")
_U8 = np.dtype("<u8")
_V16 = np.dtype("V16")
_SADDR, _DADDR = _OFFSETS["saddr"][0], _OFFSETS["daddr"][0]
# address length by family (4 unless AF_INET6): a lookup is the cheapest way to it
_ADDR_LEN = np.full(256, 4, np.uint8)
_ADDR_LEN[c.AF_INET6] = 16
_AF_INET6 = int(c.AF_INET6)  # an IntEnum costs numpy a slow conversion in every compare


def _field(name: str, index: int = 0) -> tuple[int, np.dtype]:
    """(byte offset, dtype) of a record field, or of element `index` of an array field."""
    off, dt = _OFFSETS[name]
    if dt.subdtype is not None:
        dt = dt.subdtype[0]
        off += index * dt.itemsize
    return off, dt


# transposed a block of records at a time when a row is this wide or wider (bytes):
# source and target stay in cache (1.3x faster at 32 words); narrower ones in one go
_BLOCK_ROWS, _BLOCK_FROM = 256, 64


class _Plan:
    """What to_columns() reads for one (wanted, kernel tcp_info length), worked out once.

    The fields it needs are grouped into blocks of neighbours of one dtype (13 for the
    default attributes); each chunk transposes each block in one pass into rows, one
    contiguous column each. A column is then a row as it is: per chunk, a dozen numpy
    copies and list lookups instead of ~100 shifts, masks and casts, whose Python
    overhead per call cost more than the copying (2,500 records a chunk)."""

    def __init__(self, wanted: frozenset[int] | None, info_len: int) -> None:
        def want(attr: int) -> bool:
            return wanted is None or attr in wanted

        slots: dict[tuple[int, np.dtype], int] = {}

        def slot(name: str, index: int = 0) -> tuple[int, np.dtype]:
            key = _field(name, index)
            slots[key] = -1
            return key

        # (column, field) in the order to_columns() fills them; info: (column, field,
        # dtype to cast to or None)
        head = [(col, slot(f)) for col, f in (
            ("inet_diag_msg_family", "family"), ("inet_diag_msg_state", "state"),
            ("inet_diag_msg_timer", "timer"), ("inet_diag_msg_retrans", "retrans"),
            ("inet_diag_msg_socket_interface", "ifindex"), ("inet_diag_msg_socket_cookie", "cookie"),
            ("inet_diag_msg_expires", "expires"), ("inet_diag_msg_rqueue", "rqueue"),
            ("inet_diag_msg_wqueue", "wqueue"), ("inet_diag_msg_uid", "uid"),
            ("inet_diag_msg_inode", "inode"),
            # network order, as inet_diag_msg holds them: the record's >u2 as it is
            ("inet_diag_msg_socket_source_port", "sport"), ("inet_diag_msg_socket_destination_port", "dport"))]
        family, kind, cc_kind = slot("family"), slot("kind"), slot("cc_kind")
        info = []
        self.info = want(c.INET_DIAG_INFO)
        if self.info:
            for src, col in TO_RECORD.items():
                if DIAG_END.get(col, 0) > info_len:
                    continue  # this kernel's struct tcp_info ends before it: inet_diag omits it too
                key = slot("ti." + src)
                info.append((col, key, None if key[1] == DIAG_DTYPE[col] else DIAG_DTYPE[col]))
        attrs = []  # the attributes of full sockets after tcp_info, before traffic_class
        if want(c.INET_DIAG_MEMINFO):
            attrs += [(name, slot("skmeminfo", i)) for (name, _, _), i in zip(L.MEMINFO, MEMINFO_FROM_SKMEMINFO)]
        if want(c.INET_DIAG_SKMEMINFO):
            attrs += [(name, slot("skmeminfo", i)) for i, (name, _, _) in enumerate(L.SKMEMINFO)]
        if want(c.INET_DIAG_SHUTDOWN):
            attrs.append(("shutdown_state", slot("shutdown")))
        if want(c.INET_DIAG_TOS):
            attrs.append(("type_of_service", slot("tos")))
        tclass = slot("tclass") if want(c.INET_DIAG_TCLASS) else None
        late = []  # ... and after it
        if want(c.INET_DIAG_CLASS_ID):
            late.append(("class_id", slot("class_id")))
        if want(c.INET_DIAG_CGROUP_ID):
            late.append(("c_group", slot("cgroup_id")))
        if want(c.INET_DIAG_SOCKOPT):
            late.append(("sock_opt", slot("sockopt")))
        # the name as two u64 halves: rows compare whole names with two compares
        ca_off = _OFFSETS["ti.ca_name"][0]
        cong = None
        if want(c.INET_DIAG_CONG):
            slots[(ca_off, _U8)] = slots[(ca_off + 8, _U8)] = -1
            cong = ((ca_off, _U8), (ca_off + 8, _U8))
        # cc_info, a union read per layout: its u32 words (each layout's fields are
        # u32s at word boundaries but dctcp's first two, u16 halves of word 0)
        cc = []
        for kind_id, attr, layout in ((CC_BBR, c.INET_DIAG_BBRINFO, L.BBRINFO),
                                      (CC_DCTCP, c.INET_DIAG_DCTCPINFO, L.DCTCPINFO),
                                      (CC_VEGAS, c.INET_DIAG_VEGASINFO, L.VEGASINFO)):
            if want(attr):
                fields = [(name, slot("cc_info", off // 4), (off & 3) * 8, np.dtype(fmt)) for name, off, fmt in layout]
                cc.append((kind_id, fields))

        # blocks: runs of fields of one dtype, each following the last
        self.blocks: list[tuple[int, np.dtype, int]] = []
        end = -1
        for off, dt in sorted(slots, key=lambda k: k[0]):
            if self.blocks and off == end and dt == self.blocks[-1][1]:
                o, d, count = self.blocks[-1]
                self.blocks[-1] = (o, d, count + 1)
            else:
                self.blocks.append((off, dt, 1))
            end = off + dt.itemsize
        at = 0
        for off, dt, count in self.blocks:
            for i in range(count):
                slots[(off + i * dt.itemsize, dt)] = at
                at += 1

        def rows(cols: list[tuple[str, tuple]]) -> list[tuple[str, int]]:
            return [(col, slots[key]) for col, key in cols]

        self.head, self.attrs, self.late = rows(head), rows(attrs), rows(late)
        self.info_cols = [(col, slots[key], cast) for col, key, cast in info]
        self.family, self.kind, self.cc_kind = slots[family], slots[kind], slots[cc_kind]
        self.tclass = None if tclass is None else slots[tclass]
        self.cong = None if cong is None else (slots[cong[0]], slots[cong[1]], ca_off)
        self.cc = [(kind_id, [(name, slots[key], shift, dt) for name, key, shift, dt in fields])
                   for kind_id, fields in cc]

    def rows(self, recs: np.ndarray) -> list[np.ndarray]:
        """Every field of the plan as a contiguous column (new memory, not recs'),
        indexed by the plan's row numbers."""
        n = len(recs)
        out = []
        for off, dt, count in self.blocks:
            src = np.ndarray((n, count), dt, recs, off, (REC_SIZE, dt.itemsize))
            t = np.empty((count, n), dt)
            if count * dt.itemsize < _BLOCK_FROM:
                t[...] = src.T
            else:
                for i in range(0, n, _BLOCK_ROWS):
                    t[:, i:i + _BLOCK_ROWS] = src[i:i + _BLOCK_ROWS].T
            out.extend(t)
        return out


def _bytes16(recs: np.ndarray, off: int) -> np.ndarray:
    """The 16-byte field at off of every record, copied out as (n, 16) uint8: copied
    as one 16-byte item a record (5x faster than numpy's copy of an (n, 16) view,
    whose inner loop runs over the 16 bytes)."""
    n = len(recs)
    return np.ndarray((n,), _V16, recs, off, (REC_SIZE,)).copy().view(np.uint8).reshape(n, _V16.itemsize)


@functools.lru_cache(maxsize=16)
def _plan(wanted: frozenset[int] | None, info_len: int) -> _Plan:
    return _Plan(wanted, info_len)


def _cong(recs: np.ndarray, name_at: int, lo: np.ndarray, hi: np.ndarray,
          has: np.ndarray) -> tuple[BytesColumn, np.ndarray]:
    """congestion_algorithm_string / _enum as the decoder builds them (rows without a
    name stay empty). lo, hi: the 16-byte names as two u64 halves. A handful of
    distinct names: each is looked up once and given to its rows with two compares."""
    n = len(recs)
    data = _bytes16(recs, name_at)
    lengths = np.zeros(n, np.uint8)
    enum = np.zeros(n, np.uint8)
    left = has
    while left[i := int(left.argmax())]:
        rows = (lo == lo[i]) & (hi == hi[i]) & has
        name = data[i].tobytes().split(b"\0", 1)[0]
        # the rows of two names are disjoint: adding sets each row once (cheaper
        # than a masked assignment)
        lengths += rows.view(np.uint8) * np.uint8(len(name))
        enum += rows.view(np.uint8) * np.uint8(L.CONGESTION_ENUM.get(name, 0))
        left = left & ~rows
    if np.count_nonzero(has) != n:
        data[~has] = 0
    return BytesColumn(data, lengths), enum


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
    plan = _plan(wanted, kernel_tcp_info_len())
    rows = plan.rows(recs)
    for col, i in plan.head:
        cols[col] = rows[i]
    fam = rows[plan.family]
    alen = _ADDR_LEN.take(fam)
    cols["inet_diag_msg_socket_source"] = BytesColumn(_bytes16(recs, _SADDR), alen)
    cols["inet_diag_msg_socket_destination"] = BytesColumn(_bytes16(recs, _DADDR), alen.copy())

    full = rows[plan.kind] == KIND_FULL
    nfull = np.count_nonzero(full)
    if not nfull:
        return cols  # TIME_WAIT and request sockets carry no attributes
    every = nfull == n

    if plan.info:
        for col, i, cast in plan.info_cols:
            cols[col] = rows[i] if cast is None else rows[i].astype(cast)
        state = cols["inet_diag_msg_state"]
        cols["tcp_info_state"] = state if every else np.where(full, state, 0).astype(np.uint8)
        # fields tcp_get_info() always leaves 0 (tcpi_fackets, tcpi_last_ack_sent)
        cols["tcp_info_fackets"] = np.zeros(n, "<u4")
        cols["tcp_info_last_ack_sent"] = np.zeros(n, "<u4")
    for col, i in plan.attrs:
        cols[col] = rows[i]
    if plan.tclass is not None and np.count_nonzero(full & (fam == _AF_INET6)):
        cols["traffic_class"] = rows[plan.tclass]
    for col, i in plan.late:
        cols[col] = rows[i]
    if plan.cong is not None:
        lo_at, hi_at, name_at = plan.cong
        lo, hi = rows[lo_at], rows[hi_at]
        has = full & ((lo | hi) != 0)  # a name that is all zero bytes is no name
        if np.count_nonzero(has):
            cols["congestion_algorithm_string"], cols["congestion_algorithm_enum"] = _cong(recs, name_at, lo, hi, has)
    cc = rows[plan.cc_kind]
    if plan.cc and np.count_nonzero(cc):
        for kind_id, fields in plan.cc:
            mine = cc == kind_id
            count = np.count_nonzero(mine)
            if not count:
                continue
            whole = count == n
            for name, i, shift, dt in fields:
                vals = rows[i] if dt == _U4 else ((rows[i] >> shift) & ((1 << (dt.itemsize * 8)) - 1)).astype(dt)
                cols[name] = vals if whole else np.where(mine, vals, 0).astype(dt)
    return cols


class IterCollector:
    """Reads one namespace through the iterator: the narrow interface the poll
    collector uses. `columns()` yields Columns chunks (like one netlink chunk each)."""

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
        continues on a reader thread that only reads (read() releases the GIL: the
        kernel's walk, most of the time), handing each filled buffer to a converter
        thread that turns it into columns and hands the buffer back. The next read
        overlaps converting the last one, and both overlap the caller encoding the
        one before: the poll costs about the longest of the three, not a sum."""
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
        # (buffer, records) as read, then None; an exception of the reader instead
        filled: queue.SimpleQueue = queue.SimpleQueue()
        filled.put((buf, count))
        # converted chunks wait here; one at most, so memory stays a few chunks
        full: queue.Queue = queue.Queue(maxsize=1)
        stop = threading.Event()

        def reader(carry: bytes) -> None:
            try:
                while not stop.is_set():
                    b = free.get()
                    n, carry, done = _fill(fd, b, carry)
                    filled.put((b, n))
                    if done:
                        break
            except BaseException as e:  # handed on to the caller, raised there
                filled.put(e)
            filled.put(None)

        def converter() -> None:
            # takes every item up to the reader's None, converting or not, so every
            # buffer goes back to `free` and the reader never waits for one forever
            failed = False
            while (item := filled.get()) is not None:
                if isinstance(item, BaseException):
                    failed = True
                    full.put(item)
                    continue
                b, n = item
                try:
                    cols = (to_columns(np.frombuffer(b, ITER_DTYPE, count=n), wanted)
                            if n and not failed and not stop.is_set() else None)
                except BaseException as e:
                    failed, cols = True, e
                    stop.set()  # the reader stops after its current read
                finally:
                    free.put(b)
                if cols is not None:
                    full.put(cols)
            full.put(None)

        # records -> columns on a thread of their own beside the reader's: the worker that
        # consumes the chunks only encodes (the longer half)
        name = threading.current_thread().name
        threads = [threading.Thread(target=reader, args=(carry,), name=f"{name}-iter", daemon=True),
                   threading.Thread(target=converter, name=f"{name}-iterconv", daemon=True)]
        for t in threads:
            t.start()
        try:
            while (item := full.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while any(t.is_alive() for t in threads):  # unblock a converter waiting on a full queue
                try:
                    full.get(timeout=0.05)
                except queue.Empty:
                    pass
            for t in threads:
                t.join()

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
