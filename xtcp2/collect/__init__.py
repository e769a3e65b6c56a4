"""Collection backends: a namespace in, Columns out (to the record sink).

`netlink` (inet_diag dumps) is the reference backend; `iter` (the BPF TCP iterator) yields
the same columns and is chosen with -collector (NetlinkCollector calls it per namespace).
"""
from .netlink import NetlinkCollector, PollStats

__all__ = ["NetlinkCollector", "PollStats"]
