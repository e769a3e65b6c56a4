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


def select_mode(mode: str) -> tuple[bool, str]:
    """--mode policy: (use bpf?, line to log). poll -> poll; auto -> bpf if it loads here,
    else poll, saying why; bpf -> bpf, or Xtcp2Error with the actionable reason."""
    from ..errors import Xtcp2Error

    if mode == "poll":
        return False, "mode poll"
    ok, why = available()
    if mode == "bpf":
        if not ok:
            raise Xtcp2Error(f"--mode bpf cannot run here: {why}")
        return True, f"mode bpf: {why}"
    if ok:
        return True, f"mode auto: using bpf ({why})"
    return False, f"mode auto: using poll (bpf unavailable: {why})"
