"""--mode bpf: libbpf loader, ring buffer reader, event tracker and the bpf-mode collector.

`available()` says whether the BPF programs load here (and why not); `BpfCollector`
plugs into the poll pipeline's namespace table, collector and emitter.
"""
from __future__ import annotations


def available() -> tuple[bool, str]:
    """(True, how) if --mode bpf can run on this host, else (False, actionable reason)."""
    from .loader import available as _available
    return _available()


def __getattr__(name: str):
    if name == "BpfCollector":
        from .collector import BpfCollector
        return BpfCollector
    raise AttributeError(name)
