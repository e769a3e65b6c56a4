"""Python mirror of bpf/tcp_iter.h and the kernel side of the TCP socket iterator
(bpf/tcp_iter.bpf.c): the record dtype, loading and attaching the program, and
creating an iterator fd. Turning records into columns is xtcp2/collect/iter.py.

An iterator fd belongs to the network namespace of the thread that creates it, and
visits that namespace's TCP sockets.
"""
from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import numpy as np

from ..errors import Xtcp2Error
from . import libbpf
from .btf_check import rodata_u32
from .tcp_info import TCP_INFO_DTYPE

log = logging.getLogger(__name__)

OBJECT_NAME = "tcp_iter.bpf.o"
PROG = "xtcp2_tcp_iter"

# enum xtcp2_iter_kind / enum xtcp2_iter_cc (bpf/tcp_iter.h)
KIND_FULL, KIND_TIMEWAIT, KIND_REQUEST = 1, 2, 3
CC_NONE, CC_BBR, CC_DCTCP, CC_VEGAS = 0, 1, 2, 3

ITER_DTYPE = np.dtype([
    ("cookie", "<u8"), ("cgroup_id", "<u8"),
    ("family", "u1"), ("state", "u1"), ("timer", "u1"), ("retrans", "u1"),
    ("sport", ">u2"), ("dport", ">u2"), ("saddr", "u1", 16), ("daddr", "u1", 16),
    ("ifindex", "<u4"), ("expires", "<u4"), ("rqueue", "<u4"), ("wqueue", "<u4"), ("uid", "<u4"), ("inode", "<u4"),
    ("netns_ino", "<u4"), ("kind", "u1"), ("cc_kind", "u1"), ("shutdown", "u1"), ("tos", "u1"),
    ("tclass", "u1"), ("_pad0", "u1"), ("sockopt", "<u2"), ("class_id", "<u4"),
    ("skmeminfo", "<u4", 9), ("cc_info", "<u4", 5),
    ("ti", TCP_INFO_DTYPE),
])
REC_SIZE = ITER_DTYPE.itemsize  # checked against the object's xtcp2_iter_rec_size at load

# ~2,500 records per chunk. Against 4 MiB (~9,700), a 100,006-socket poll took 0.32-0.36 s
# of CPU instead of 0.41-0.44 s (a chunk's columns and encoder matrices stay in cache),
# and the reader's two buffers and each chunk's transient arrays a quarter of the memory.
DEFAULT_BUFFER = 1 << 20
# INET_DIAG_MEMINFO (rmem, wmem, fmem, tmem) as indices into the record's skmeminfo
MEMINFO_FROM_SKMEMINFO = (0, 5, 4, 2)


def object_path() -> Path:
    """$XTCP2_BPF_ITER_OBJECT, else the wheel's copy, else the checkout's bpf/ directory."""
    from .loader import find_object
    return find_object(OBJECT_NAME, "XTCP2_BPF_ITER_OBJECT")


class TcpIterProgram:
    """The loaded and attached iterator. `create_fd()` opens one walk of the calling
    thread's namespace; close() detaches and frees everything."""

    def __init__(self, obj: int, link: int) -> None:
        self._obj = obj
        self._link = link
        self.link_fd = libbpf.load().bpf_link__fd(link)

    @classmethod
    def load(cls, path: Path | None = None) -> "TcpIterProgram":
        """Raises Xtcp2Error with an actionable one-line reason."""
        path = path or object_path()
        if not path.exists():
            raise Xtcp2Error(f"BPF object {path} not found: build it with `make -C bpf`")
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            raise Xtcp2Error("kernel has no BTF (/sys/kernel/btf/vmlinux missing): the iterator cannot load")
        lib = libbpf.load()
        obj = libbpf.open_object(str(path))
        try:
            got = rodata_u32(obj, "xtcp2_iter_rec_size")
            if got is not None and got != REC_SIZE:
                raise Xtcp2Error(f"{path}: record size {got} != {REC_SIZE} expected by xtcp2.ebpf.tcp_iter; "
                                 "rebuild with `make -C bpf`")
            libbpf.clear_log()
            rc = lib.bpf_object__load(obj)
            if rc == -errno.EPERM:
                raise Xtcp2Error("loading the BPF iterator needs root or CAP_BPF + CAP_PERFMON: "
                                 "bpf_object__load: Operation not permitted")
            libbpf.check_int("bpf_object__load", rc)
            prog = libbpf.check_ptr(f"find program {PROG}", lib.bpf_object__find_program_by_name(obj, PROG.encode()))
            link = libbpf.check_ptr("bpf_program__attach_iter", lib.bpf_program__attach_iter(prog, None))
        except BaseException:
            lib.bpf_object__close(obj)
            raise
        return cls(obj, link)

    def create_fd(self) -> int:
        """A readable fd walking the calling thread's network namespace."""
        fd = libbpf.load().bpf_iter_create(self.link_fd)
        if fd < 0:
            raise OSError(-fd, f"bpf_iter_create: {os.strerror(-fd)}")
        return fd

    def close(self) -> None:
        lib = libbpf.load()
        if self._link:
            lib.bpf_link__destroy(self._link)
            self._link = 0
        if self._obj:
            lib.bpf_object__close(self._obj)
            self._obj = 0
