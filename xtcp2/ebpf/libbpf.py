"""Thin ctypes binding to the system libbpf (libbpf.so.1): only what the loader uses.

libbpf 1.x returns NULL / negative errno and sets errno; every wrapper here turns
that into LibbpfError with the function name and strerror, so callers get one line.
libbpf's own log lines (verifier output, CO-RE relocation failures) are captured via
libbpf_set_print into a bounded buffer and attached to the error.
"""
from __future__ import annotations

import collections
import ctypes
import errno
import os
import threading

from ..errors import Xtcp2Error
from .kconfig import kconfig_override


class LibbpfError(Xtcp2Error):
    def __init__(self, func: str, err: int, log: str = "") -> None:
        msg = f"{func}: {os.strerror(err) if err > 0 else 'failed'}"
        if log:
            msg += f" (libbpf: {log})"
        super().__init__(msg)
        self.func = func
        self.errno = err


_lib = None
_lib_lock = threading.Lock()
_LOG: collections.deque[str] = collections.deque(maxlen=200)
_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


LIBBPF_DEBUG = 2


@_PRINT_FN
def _print(level: int, fmt: bytes, va: int) -> int:
    if level >= LIBBPF_DEBUG:  # per-relocation chatter would push the real error out
        return 0
    # va_list is an array type on x86_64: it arrives as a pointer vsnprintf accepts. It can
    # be used once, so the buffer is sized for a verifier log (whose last lines say why).
    buf = ctypes.create_string_buffer(_PRINT_BUF)
    _libc.vsnprintf(buf, len(buf), fmt, va)
    for line in buf.value.decode(errors="replace").splitlines():
        if line.strip():
            _LOG.append(line.rstrip())
    return 0


_PRINT_BUF = 1 << 18


def recent_log(n: int = 3) -> str:
    """The last libbpf log lines that look like errors, joined on one line."""
    lines = [ln for ln in _LOG if "err" in ln.lower() or "fail" in ln.lower() or "invalid" in ln.lower()]
    return " | ".join((lines or list(_LOG))[-n:])


def recent_lines(n: int = 40) -> list[str]:
    """The last n libbpf log lines as they came (a verifier log ends with its reason)."""
    return list(_LOG)[-n:]


def clear_log() -> None:
    _LOG.clear()


def _sig(lib, name, res, *args) -> None:
    fn = getattr(lib, name)
    fn.restype = res
    fn.argtypes = list(args)


def load() -> ctypes.CDLL:
    """The process-wide libbpf handle. Raises Xtcp2Error if libbpf.so.1 is missing."""
    global _lib
    with _lib_lock:
        if _lib is not None:
            return _lib
        path = os.environ.get("XTCP2_LIBBPF") or "libbpf.so.1"
        try:
            lib = ctypes.CDLL(path, use_errno=True)
        except OSError as e:
            raise Xtcp2Error(f"cannot load {path}: {e}; install Debian's libbpf1 (apt-get install libbpf1)") from None
        P, I, U, S, Z = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t
        _sig(lib, "libbpf_set_print", P, _PRINT_FN)
        _sig(lib, "libbpf_get_error", ctypes.c_long, P)
        _sig(lib, "libbpf_num_possible_cpus", I)
        _sig(lib, "bpf_object__open_file", P, S, P)
        _sig(lib, "bpf_object__load", I, P)
        _sig(lib, "bpf_object__close", None, P)
        _sig(lib, "bpf_object__find_program_by_name", P, P, S)
        _sig(lib, "bpf_object__find_map_by_name", P, P, S)
        _sig(lib, "bpf_program__set_autoload", I, P, ctypes.c_bool)
        _sig(lib, "bpf_program__autoload", ctypes.c_bool, P)
        _sig(lib, "bpf_program__set_attach_target", I, P, I, S)
        _sig(lib, "bpf_program__attach", P, P)
        _sig(lib, "bpf_program__fd", I, P)
        _sig(lib, "bpf_program__name", S, P)
        _sig(lib, "bpf_link__destroy", I, P)
        _sig(lib, "bpf_map__fd", I, P)
        _sig(lib, "bpf_map__set_max_entries", I, P, U)
        _sig(lib, "bpf_map__max_entries", U, P)
        _sig(lib, "bpf_map__initial_value", P, P, ctypes.POINTER(Z))
        _sig(lib, "bpf_map_lookup_elem", I, I, P, P)
        _sig(lib, "bpf_map_update_elem", I, I, P, P, ctypes.c_uint64)
        _sig(lib, "bpf_program__attach_iter", P, P, P)
        _sig(lib, "bpf_link__fd", I, P)
        _sig(lib, "bpf_iter_create", I, I)
        lib.libbpf_set_print(_print)
        _lib = lib
        return lib


def errno_now() -> int:
    return ctypes.get_errno() or errno.EINVAL


def check_ptr(func: str, ptr: int | None) -> int:
    if not ptr:
        raise LibbpfError(func, errno_now(), recent_log())
    return ptr


def check_int(func: str, rc: int) -> int:
    if rc < 0:
        raise LibbpfError(func, -rc, recent_log())
    return rc


class OpenOpts(ctypes.Structure):
    """struct bpf_object_open_opts of libbpf 1.x, up to kconfig (sz says how far we fill it)."""
    _fields_ = [
        ("sz", ctypes.c_size_t),
        ("object_name", ctypes.c_char_p),
        ("relaxed_maps", ctypes.c_bool),
        ("pin_root_path", ctypes.c_char_p),
        ("_attach_prog_fd", ctypes.c_uint32),  # removed in libbpf 1.0, its slot stays
        ("kconfig", ctypes.c_char_p),
    ]


def open_object(path: str) -> int:
    """bpf_object__open_file with our kconfig (CONFIG_HZ), never libbpf's own lookup."""
    lib = load()
    opts = OpenOpts(sz=ctypes.sizeof(OpenOpts), kconfig=kconfig_override().encode())
    return check_ptr("bpf_object__open_file", lib.bpf_object__open_file(path.encode(), ctypes.byref(opts)))
