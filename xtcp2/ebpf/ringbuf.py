"""Batch reader of a BPF ring buffer map, straight from its mmap'ed pages into numpy.

Layout (kernel/bpf/ringbuf.c): page 0 holds consumer_pos (read-write for us), page 1
producer_pos (read-only), then the data area (mapped once: a batch that wraps past its
end is joined from two pieces). All our records have one size, so a batch is a
strided numpy view: no Python work per event.

Wakeup rule: the kernel only wakes the epoll waiter when a record is committed at
exactly consumer_pos (i.e. we had caught up). Our store of consumer_pos must be
globally visible before we re-read producer_pos and go to sleep, or both sides can
miss each other (lost wakeup). A locked instruction is a full barrier on x86; a
threading.Lock round trip executes one, so `_fence()` is a seq-cst fence.

Memory ordering: the kernel publishes a record with store-release (header length,
then producer_pos) and expects our consumer_pos store to come after our reads of
the record. On x86 (TSO) plain loads and stores keep that order, so numpy reads
are correct. On weakly ordered CPUs (arm64, ppc64, riscv) they are not, and Python
cannot issue load-acquire / store-release, so the reader refuses to run there:
`check_arch()` says so in one line, and `--mode auto` falls back to poll mode.
"""
from __future__ import annotations

import ctypes
import mmap
import platform
import select
import threading

import numpy as np

from ..errors import Xtcp2Error
from .tcp_events import RB_BUSY, RB_DISCARD, RECORD_DTYPE, RECORD_STRIDE

# total store order: loads are not reordered with loads, nor stores with stores
TSO_MACHINES = frozenset({"x86_64", "amd64", "AMD64", "i386", "i686"})


def check_arch(machine: str | None = None) -> None:
    """Xtcp2Error unless this CPU orders plain loads and stores as the reader needs."""
    machine = machine or platform.machine()
    if machine not in TSO_MACHINES:
        raise Xtcp2Error(f"the BPF ring buffer reader needs x86's ordered loads and stores; on {machine} it "
                         "would need acquire/release barriers Python cannot issue: use --mode poll "
                         "(-collector iter works on every architecture)")

_PAGE = mmap.PAGESIZE
_fence_lock = threading.Lock()


def _fence() -> None:
    _fence_lock.acquire()
    _fence_lock.release()


class RingBufferReader:
    """Reads fixed-size records from one BPF_MAP_TYPE_RINGBUF map fd."""

    def __init__(self, map_fd: int, size: int) -> None:
        check_arch()
        if size <= 0 or size & (size - 1) or size % _PAGE:
            raise ValueError(f"ring buffer size {size} must be a power of 2 and a multiple of the page size")
        self.size = size
        self.mask = size - 1
        self._cons_map = mmap.mmap(map_fd, _PAGE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        # The kernel lets the data pages be mapped twice in a row, so that a record
        # wrapping past the end reads as one piece; mapped pages count in our RSS, so
        # they are mapped once (16 MiB less at the default size) and a read that wraps
        # joins its two pieces (it is copied out anyway).
        self._data_map = mmap.mmap(map_fd, _PAGE + size, mmap.MAP_SHARED, mmap.PROT_READ, offset=_PAGE)
        self._cons = ctypes.c_uint64.from_buffer(self._cons_map)
        # producer_pos is read-only memory: read through a numpy view, not from_buffer
        self._prod = np.frombuffer(self._data_map, dtype="<u8", count=1, offset=0)
        self._data = np.frombuffer(self._data_map, dtype=np.uint8, offset=_PAGE)
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)
        self.consumed = 0
        self.discarded = 0
        self.stalled = False  # the last read stopped at a record still being written

    def fileno(self) -> int:
        """An epoll fd that is readable when the kernel signalled new records."""
        return self._ep.fileno()

    def pending_bytes(self) -> int:
        return int(self._prod[0]) - self._cons.value

    def read(self, max_records: int = 65536) -> np.ndarray:
        """Copy out up to max_records committed records (structured RECORD_DTYPE array)
        and release their space to the kernel."""
        cons = self._cons.value
        prod = int(self._prod[0])
        n = min((prod - cons) // RECORD_STRIDE, max_records)
        if n <= 0:
            self.stalled = False
            return np.empty(0, RECORD_DTYPE)
        start = cons & self.mask
        end = start + n * RECORD_STRIDE
        if end <= self.size:
            raw = self._data[start:end]
        else:
            raw = np.concatenate((self._data[start:], self._data[:end - self.size]))
        view = raw.view(RECORD_DTYPE)
        lens = view["rb_len"]
        busy = np.flatnonzero(lens & RB_BUSY)
        self.stalled = bool(len(busy))
        if self.stalled:
            n = int(busy[0])  # stop at the first record still being written
            view = view[:n]
            lens = lens[:n]
        out = view.copy()
        if n:
            keep = (lens & RB_DISCARD) == 0
            if not keep.all():
                self.discarded += int(n - keep.sum())
                out = out[keep]
            self._cons.value = cons + n * RECORD_STRIDE
            _fence()
            self.consumed += len(out)
        return out

    def wait(self, timeout: float) -> bool:
        """Sleep until the kernel signals data (or timeout). True if data is pending."""
        _fence()
        if self.pending_bytes() > 0:
            return True
        self._ep.poll(timeout)
        return self.pending_bytes() > 0

    def close(self) -> None:
        try:
            self._ep.close()
        finally:
            # drop exported buffers before closing the mmaps
            del self._cons, self._prod, self._data
            self._cons_map.close()
            self._data_map.close()
