"""The BPF TCP socket iterator (bpf/tcp_iter.bpf.c): load it, read it per namespace,
and turn its records into the inet_diag decoder's columns.

An iterator fd belongs to the network namespace of the thread that creates it, and
visits that namespace's TCP sockets. So only `bpf_iter_create()` runs inside the
namespace (on the NetnsEnterer thread); the fd is read from the caller's thread into
a reused buffer, viewed as numpy records: no netlink, no attribute parsing.

`to_columns()` gives every column `xtcp2.netlink.decode.decode_messages` gives, with
the same names and dtypes, and only where inet_diag would have sent the attribute, so
the encoder writes the same records whichever collector ran.
"""
from __future__ import annotations

import errno
import logging
import os
import threading
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import Xtcp2Error
from ..netlink import constants as c
from ..netlink import layouts as L
from ..netlink.decode import BytesColumn, Columns
from . import libbpf
from .btf_check import rodata_u32
from .tcp_info import TCP_INFO_DTYPE, info_columns

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
    ("meminfo", "<u4", 4), ("skmeminfo", "<u4", 9), ("cc_info", "<u4", 5),
    ("ti", TCP_INFO_DTYPE),
])
REC_SIZE = ITER_DTYPE.itemsize  # checked against the object's xtcp2_iter_rec_size at load

DEFAULT_BUFFER = 4 << 20  # ~9,700 records per chunk: bounded memory, few reads


def object_path() -> Path:
    """$XTCP2_BPF_ITER_OBJECT, else the repository's bpf/ directory, else next to this package."""
    env = os.environ.get("XTCP2_BPF_ITER_OBJECT")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for cand in (here.parents[2] / "bpf" / OBJECT_NAME, here.parent / OBJECT_NAME):
        if cand.exists():
            return cand
    return here.parents[2] / "bpf" / OBJECT_NAME


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
        obj = libbpf.check_ptr("bpf_object__open_file", lib.bpf_object__open_file(str(path).encode(), None))
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


def available(path: Path | None = None) -> tuple[bool, str]:
    """Can the iterator run here? (ok, reason). Loads, walks this namespace once, unloads."""
    try:
        prog = TcpIterProgram.load(path)
    except (Xtcp2Error, OSError) as e:
        return False, str(e)
    try:
        fd = prog.create_fd()
        os.close(fd)
    except OSError as e:
        return False, f"BPF iterator: {e}"
    finally:
        prog.close()
    return True, "BPF TCP iterator loads"


def _sockstat_tcp(path: str) -> int:
    """Sockets counted by one sockstat file: TCP[6] inuse (+ tw on the v4 line)."""
    with open(path, "rb") as f:
        for line in f.read().split(b"\n"):
            if line.startswith(b"TCP:") or line.startswith(b"TCP6:"):
                f = line.split()
                total = int(f[f.index(b"inuse") + 1])
                if b"tw" in f:
                    total += int(f[f.index(b"tw") + 1])
                return total
    return 0


def has_tcp_sockets() -> bool:
    """Does the calling thread's namespace hold any TCP socket? Two small /proc reads:
    `inuse` counts hashed (listening and connected) sockets, `tw` TIME_WAIT ones; a
    request socket needs a listener, so 0 and 0 means there is nothing to report.
    thread-self, not self: /proc/self/net is the main thread's namespace."""
    return (_sockstat_tcp("/proc/thread-self/net/sockstat") + _sockstat_tcp("/proc/thread-self/net/sockstat6")) > 0


def read_records(fd: int, buf: bytearray) -> Iterator[np.ndarray]:
    """Records read from an iterator fd, a chunk at a time: structured views into buf,
    valid until the next chunk is asked for. The fd is left open."""
    mv = memoryview(buf)
    size = len(buf) - len(buf) % REC_SIZE
    used = 0
    while True:
        n = os.readv(fd, [mv[used:size]])
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


_CONG_ENUM_BY_NAME = {k: v for k, v in L.CONGESTION_ENUM.items()}


def _cong(names: np.ndarray, rows: np.ndarray, n: int) -> tuple[BytesColumn, np.ndarray]:
    """congestion_algorithm_string / _enum as the decoder builds them (rows without a
    name stay empty)."""
    data = np.zeros((n, L.CONG_NAME_MAX), np.uint8)
    data[rows] = np.frombuffer(names[rows].tobytes(), np.uint8).reshape(-1, 16)[:, :L.CONG_NAME_MAX]
    lengths = np.zeros(n, np.uint8)
    lengths[rows] = np.char.str_len(names[rows]).astype(np.uint8)
    enum = np.zeros(n, np.uint8)
    sel = names[rows]
    for name in np.unique(sel).tolist():  # a handful of distinct names
        enum[rows[sel == name]] = _CONG_ENUM_BY_NAME.get(name, 0)
    return BytesColumn(data, lengths), enum


def _fill(n: int, rows: np.ndarray, vals: np.ndarray, dtype) -> np.ndarray:
    col = np.zeros(n, dtype)
    col[rows] = vals
    return col


def to_columns(recs: np.ndarray, wanted: frozenset[int] | None = None) -> Columns:
    """Columns from iterator records, as decode_messages gives them for the same
    sockets: same names, same dtypes, attribute columns only where inet_diag would
    send the attribute (full sockets; TCLASS on AF_INET6; BBR info below TIME_WAIT).
    Never a view into recs: the caller's buffer is reused."""
    n = len(recs)
    cols: Columns = {"_n": n}
    if n == 0:
        return cols

    def want(attr: int) -> bool:
        return wanted is None or attr in wanted

    fam = recs["family"].copy()
    cols["inet_diag_msg_family"] = fam
    cols["inet_diag_msg_state"] = recs["state"].copy()
    cols["inet_diag_msg_timer"] = recs["timer"].copy()
    cols["inet_diag_msg_retrans"] = recs["retrans"].copy()
    cols["inet_diag_msg_socket_source_port"] = recs["sport"].copy()
    cols["inet_diag_msg_socket_destination_port"] = recs["dport"].copy()
    cols["inet_diag_msg_socket_interface"] = recs["ifindex"].copy()
    cols["inet_diag_msg_socket_cookie"] = recs["cookie"].copy()
    cols["inet_diag_msg_expires"] = recs["expires"].copy()
    cols["inet_diag_msg_rqueue"] = recs["rqueue"].copy()
    cols["inet_diag_msg_wqueue"] = recs["wqueue"].copy()
    cols["inet_diag_msg_uid"] = recs["uid"].copy()
    cols["inet_diag_msg_inode"] = recs["inode"].copy()
    alen = np.where(fam == c.AF_INET6, 16, 4).astype(np.uint8)
    cols["inet_diag_msg_socket_source"] = BytesColumn(recs["saddr"].copy(), alen)
    cols["inet_diag_msg_socket_destination"] = BytesColumn(recs["daddr"].copy(), alen.copy())

    kind = recs["kind"]
    full = kind == KIND_FULL
    if not full.any():
        return cols  # TIME_WAIT and request sockets carry no attributes
    every = bool(full.all())
    rows = slice(None) if every else np.flatnonzero(full)
    sub = recs if every else recs[rows]

    def put(name: str, vals: np.ndarray, dtype) -> None:
        cols[name] = vals.astype(dtype) if every else _fill(n, rows, vals, dtype)

    if want(c.INET_DIAG_INFO):
        for name, vals in info_columns(sub["ti"]).items():
            put(name, vals, vals.dtype)
        put("tcp_info_state", sub["state"], np.uint8)
        # fields tcp_get_info() always leaves 0 (tcpi_fackets, tcpi_last_ack_sent)
        cols["tcp_info_fackets"] = np.zeros(n, "<u4")
        cols["tcp_info_last_ack_sent"] = np.zeros(n, "<u4")
    if want(c.INET_DIAG_MEMINFO):
        mi = sub["meminfo"]
        for i, (name, _, fmt) in enumerate(L.MEMINFO):
            put(name, mi[:, i], fmt)
    if want(c.INET_DIAG_SKMEMINFO):
        sm = sub["skmeminfo"]
        for i, (name, _, fmt) in enumerate(L.SKMEMINFO):
            put(name, sm[:, i], fmt)
    if want(c.INET_DIAG_SHUTDOWN):
        put("shutdown_state", sub["shutdown"], np.uint8)
    if want(c.INET_DIAG_TOS):
        put("type_of_service", sub["tos"], np.uint8)
    if want(c.INET_DIAG_TCLASS) and bool((sub["family"] == c.AF_INET6).any()):
        put("traffic_class", sub["tclass"], np.uint8)
    if want(c.INET_DIAG_CLASS_ID):
        put("class_id", sub["class_id"], "<u4")
    if want(c.INET_DIAG_CGROUP_ID):
        put("c_group", sub["cgroup_id"], "<u8")
    if want(c.INET_DIAG_SOCKOPT):
        put("sock_opt", sub["sockopt"], "<u2")
    if want(c.INET_DIAG_CONG):
        names = recs["ti"]["ca_name"]
        has = np.flatnonzero(full & (names != b""))
        if len(has):
            cols["congestion_algorithm_string"], cols["congestion_algorithm_enum"] = _cong(names, has, n)
    cc = recs["cc_kind"]
    for kind_id, attr, layout in ((CC_BBR, c.INET_DIAG_BBRINFO, L.BBRINFO),
                                  (CC_DCTCP, c.INET_DIAG_DCTCPINFO, L.DCTCPINFO),
                                  (CC_VEGAS, c.INET_DIAG_VEGASINFO, L.VEGASINFO)):
        if not want(attr):
            continue
        r = np.flatnonzero(cc == kind_id)
        if not len(r):
            continue
        raw = np.ascontiguousarray(recs["cc_info"][r]).view(np.uint8)  # (k, 20) bytes of the union
        for name, off, fmt in layout:
            dt = np.dtype(fmt)
            vals = raw[:, off:off + dt.itemsize].copy().view(dt).reshape(-1)
            cols[name] = _fill(n, r, vals, dt)
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
            buf = _buffer(self.buffer_bytes)
            for recs in read_records(fd, buf):
                yield to_columns(recs, wanted)
        finally:
            os.close(fd)

    def close(self) -> None:
        self.program.close()


_local = threading.local()


def _buffer(size: int) -> bytearray:
    """One reused read buffer per thread (the poll collector reads namespaces in parallel)."""
    buf = getattr(_local, "buf", None)
    if buf is None or len(buf) != size:
        buf = _local.buf = bytearray(size)
    return buf


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
