"""The kernel side of --mode bpf: libbpf loader, ring buffer reader, event layout
(and the event -> columns mapping of close events). What to do with the events is
xtcp2.modes.bpf.

`available()` says whether the BPF programs load here (and why not).
"""
from __future__ import annotations


def available() -> tuple[bool, str]:
    """(True, how) if --mode bpf can run on this host, else (False, actionable reason)."""
    from .loader import available as _available
    return _available()


def load_for_mode(mode: str, ringbuf_bytes: int | None = None):
    """--mode policy: (the loaded and attached BpfProgram or None for poll, line to log).
    poll -> poll; auto -> bpf if it loads here, else poll, saying why; bpf -> bpf, or
    Xtcp2Error with the actionable reason. The program that answered the question is
    the one the daemon runs: a second load would verify every program again (~50 ms)."""
    from ..errors import Xtcp2Error

    if mode == "poll":
        return None, "mode poll"
    from . import loader
    opts = loader.LoadOptions() if ringbuf_bytes is None else loader.LoadOptions(ringbuf_bytes=ringbuf_bytes)
    bp, why = loader.try_load(opts)
    if mode == "bpf":
        if bp is None:
            raise Xtcp2Error(f"--mode bpf cannot run here: {why}")
        return bp, f"mode bpf: {why}"
    if bp is not None:
        return bp, f"mode auto: using bpf ({why})"
    return None, f"mode auto: using poll (bpf unavailable: {why})"


def select_mode(mode: str) -> tuple[bool, str]:
    """load_for_mode(), as (use bpf?, line to log), the program unloaded again."""
    bp, why = load_for_mode(mode, ringbuf_bytes=1 << 16)
    if bp is not None:
        bp.close()
    return bp is not None, why
