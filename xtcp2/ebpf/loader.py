"""Open, load and attach bpf/tcp_events.bpf.o through libbpf; detach and free on close.

Attach order for socket state changes: tp_btf (gives the real socket cookie), else
the classic sock:inet_sock_set_state tracepoint (tracefs is mounted if needed). The
two never run together: the unused one has autoload off. Everything the kernel holds
for us (links, programs, maps) belongs to this object and goes away with close().
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path


from ..errors import Xtcp2Error
from . import libbpf
from .btf_check import rodata_u32
from .tcp_events import EVENT_SIZE, Stat
from .ringbuf import RingBufferReader, check_arch

log = logging.getLogger(__name__)

OBJECT_NAME = "tcp_events.bpf.o"
PROG_BTF = "xtcp2_state_btf"
PROG_TP = "xtcp2_state_tp"
PROG_FORK = "xtcp2_fork"
PROG_UNSHARE = "xtcp2_unshare"  # syscalls:sys_exit_unshare (arch-neutral, needs tracefs)
PROG_SETNS = "xtcp2_setns"
PROG_DESTROY_FILTER = "xtcp2_destroy_filter"  # socket filter, attached by DestroyWatcher
TRACEFS = "/sys/kernel/tracing"
DEFAULT_RINGBUF = 16 << 20


def find_object(name: str, env_var: str) -> Path:
    """$env_var, else the copy shipped in the wheel (xtcp2/ebpf/bpf/, built by setup.py),
    else the checkout's bpf/ directory (`make -C bpf`). The last candidate is returned
    even when missing, so the error names where the object was expected."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    packaged = here.parent / "bpf" / name
    if packaged.exists():
        return packaged
    return here.parents[2] / "bpf" / name


def object_path() -> Path:
    """The tcp_events object: $XTCP2_BPF_OBJECT, the wheel's copy, the checkout's bpf/."""
    return find_object(OBJECT_NAME, "XTCP2_BPF_OBJECT")


def ensure_tracefs() -> None:
    """The classic tracepoint needs tracefs; it is not mounted at boot on every host."""
    if os.path.exists(os.path.join(TRACEFS, "events")):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"tracefs", TRACEFS.encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        raise Xtcp2Error(f"mount tracefs on {TRACEFS}: {os.strerror(err)}")


@dataclass
class LoadOptions:
    ringbuf_bytes: int = DEFAULT_RINGBUF
    watch_netns: bool = True          # fork + namespace switch (unshare/setns) programs
    prefer: str = "tp_btf"            # "tp_btf" or "tracepoint"
    # test hook: make the tp_btf attempt fail for real (unknown attach target)
    tp_btf_target: str | None = None


@dataclass
class BpfProgram:
    """A loaded tcp_events object with its attached links and the ring buffer reader."""

    obj: int
    links: list[int] = field(default_factory=list)
    attach_kind: str = ""
    fallback_reason: str = ""
    reader: RingBufferReader | None = None
    stats_fd: int = -1
    ncpus: int = 1
    prog_ids: list[int] = field(default_factory=list)
    filter_fd: int = -1   # xtcp2_destroy_filter, for SO_ATTACH_BPF on destroy-group sockets

    def drop_counts(self) -> tuple[int, int]:
        """(reservation failures, events submitted) summed over CPUs."""
        return self._stat(Stat.RESERVE_FAILED), self._stat(Stat.SUBMITTED)

    def broadcasts_filtered(self) -> int:
        """Destroy broadcasts the socket filter dropped as already reported."""
        return self._stat(Stat.BROADCAST_FILTERED)

    def _stat(self, idx: Stat) -> int:
        lib = libbpf.load()
        vals = (ctypes.c_uint64 * self.ncpus)()
        key = ctypes.c_uint32(idx)
        rc = lib.bpf_map_lookup_elem(self.stats_fd, ctypes.byref(key), vals)
        return sum(vals) if rc == 0 else 0

    def close(self) -> None:
        lib = libbpf.load()
        if self.reader is not None:
            self.reader.close()
            self.reader = None
        for link in self.links:
            lib.bpf_link__destroy(link)
        self.links = []
        if self.obj:
            lib.bpf_object__close(self.obj)
            self.obj = 0


def _open(lib, path: Path, opts: LoadOptions, use_btf: bool) -> int:
    obj = libbpf.open_object(str(path))
    try:
        def prog(name: str) -> int:
            return libbpf.check_ptr(f"find program {name}", lib.bpf_object__find_program_by_name(obj, name.encode()))

        lib.bpf_program__set_autoload(prog(PROG_BTF), use_btf)
        lib.bpf_program__set_autoload(prog(PROG_TP), not use_btf)
        lib.bpf_program__set_autoload(prog(PROG_FORK), opts.watch_netns)
        lib.bpf_program__set_autoload(prog(PROG_UNSHARE), opts.watch_netns)
        lib.bpf_program__set_autoload(prog(PROG_SETNS), opts.watch_netns)
        if use_btf and opts.tp_btf_target:
            libbpf.check_int(f"bpf_program__set_attach_target({opts.tp_btf_target})",
                             lib.bpf_program__set_attach_target(prog(PROG_BTF), 0, opts.tp_btf_target.encode()))
        rb = libbpf.check_ptr("find map events", lib.bpf_object__find_map_by_name(obj, b"events"))
        libbpf.check_int("bpf_map__set_max_entries", lib.bpf_map__set_max_entries(rb, opts.ringbuf_bytes))
        got = rodata_u32(obj, "xtcp2_event_size")
        if got is not None and got != EVENT_SIZE:
            raise Xtcp2Error(f"{path}: event size {got} != {EVENT_SIZE} expected by xtcp2.ebpf.tcp_events; "
                             "rebuild with `make -C bpf`")
        libbpf.clear_log()
        libbpf.check_int("bpf_object__load", lib.bpf_object__load(obj))
        return obj
    except BaseException:
        lib.bpf_object__close(obj)
        raise


def _attach_all(lib, bp: BpfProgram, names: list[str]) -> None:
    for name in names:
        p = lib.bpf_object__find_program_by_name(bp.obj, name.encode())
        link = libbpf.check_ptr(f"attach {name}", lib.bpf_program__attach(p))
        bp.links.append(link)


def _raise_if_eperm(e: Exception) -> None:
    if isinstance(e, libbpf.LibbpfError) and e.errno == 1:
        raise Xtcp2Error(f"loading BPF needs root or CAP_BPF + CAP_PERFMON (and CAP_NET_ADMIN for sock_diag); "
                         f"{e.func}: Operation not permitted") from None


def load(opts: LoadOptions | None = None, path: Path | None = None) -> BpfProgram:
    """Load and attach; raises Xtcp2Error with an actionable one-line reason."""
    opts = opts or LoadOptions()
    check_arch()  # before attaching anything
    size = opts.ringbuf_bytes
    if size < 4096 or size & (size - 1):
        raise Xtcp2Error(f"ring buffer size {size} must be a power of two >= 4096")
    path = path or object_path()
    if not path.exists():
        raise Xtcp2Error(f"BPF object {path} not found: build it with `make -C bpf` "
                         "(needs clang, bpftool, libbpf-dev)")
    if not os.path.exists("/sys/kernel/btf/vmlinux"):
        raise Xtcp2Error("kernel has no BTF (/sys/kernel/btf/vmlinux missing): CO-RE programs cannot load")
    lib = libbpf.load()
    extra = [PROG_FORK, PROG_UNSHARE, PROG_SETNS] if opts.watch_netns else []
    if opts.watch_netns:
        ensure_tracefs()  # the namespace-switch programs are classic tracepoints
    bp: BpfProgram | None = None
    reason = ""
    if opts.prefer == "tp_btf":
        try:
            bp = BpfProgram(_open(lib, path, opts, use_btf=True), attach_kind="tp_btf")
            _attach_all(lib, bp, [PROG_BTF] + extra)
        except Xtcp2Error as e:
            if bp is not None:
                bp.close()
                bp = None
            reason = str(e)
            _raise_if_eperm(e)
            log.warning("tp_btf attach failed (%s); falling back to the classic tracepoint", reason)
    if bp is None:
        ensure_tracefs()
        fb = LoadOptions(opts.ringbuf_bytes, opts.watch_netns, "tracepoint")
        try:
            obj = _open(lib, path, fb, use_btf=False)
        except libbpf.LibbpfError as e:
            _raise_if_eperm(e)
            raise
        bp = BpfProgram(obj, attach_kind="tracepoint", fallback_reason=reason)
        try:
            # the fork program is tp_btf too: without tp_btf the netns watch cannot work either
            _attach_all(lib, bp, [PROG_TP] + (extra if not reason else []))
        except BaseException:
            bp.close()
            raise
    try:
        rb = lib.bpf_object__find_map_by_name(bp.obj, b"events")
        st = lib.bpf_object__find_map_by_name(bp.obj, b"stats")
        bp.stats_fd = lib.bpf_map__fd(st)
        bp.ncpus = max(1, lib.libbpf_num_possible_cpus())
        bp.filter_fd = lib.bpf_program__fd(lib.bpf_object__find_program_by_name(bp.obj, PROG_DESTROY_FILTER.encode()))
        bp.reader = RingBufferReader(lib.bpf_map__fd(rb), opts.ringbuf_bytes)
    except BaseException:
        bp.close()
        raise
    return bp


def prog_names() -> tuple[str, ...]:
    return (PROG_BTF, PROG_TP, PROG_FORK, PROG_UNSHARE, PROG_SETNS, PROG_DESTROY_FILTER)


def try_load(opts: LoadOptions, path: Path | None = None) -> tuple[BpfProgram | None, str]:
    """(the loaded and attached program, how) or (None, the actionable reason it cannot run)."""
    try:
        bp = load(opts, path)
    except Xtcp2Error as e:
        return None, str(e)
    except OSError as e:
        return None, f"BPF unavailable: {e}"
    return bp, f"BPF programs load and attach ({bp.attach_kind})"


def available(path: Path | None = None) -> tuple[bool, str]:
    """Can --mode bpf run here? (ok, reason). Loads and unloads the object once."""
    bp, why = try_load(LoadOptions(ringbuf_bytes=1 << 16), path)
    if bp is not None:
        bp.close()
    return bp is not None, why
