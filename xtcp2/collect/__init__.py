"""Collection backends: a namespace in, Columns out (to the record sink).

`netlink` (inet_diag dumps) is the reference backend and the only one today.
"""
from .netlink import NetlinkCollector, PollStats

__all__ = ["NetlinkCollector", "PollStats"]
