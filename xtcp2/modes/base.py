"""The interface every mode offers the Daemon, and the parts modes are built from."""
from __future__ import annotations

import threading
from typing import Callable, Protocol

import numpy as np

from ..collect import NetlinkCollector
from ..config import Config
from ..netns.registry import NamespaceTable
from ..records.sink import RecordSink


class Parts:
    """What both modes drive: the watched namespaces, a collector for full dumps,
    and the sink every record goes through."""

    def __init__(self, table: NamespaceTable, collector: NetlinkCollector, sink: RecordSink,
                 learn_owners: Callable[[np.ndarray, np.ndarray, np.ndarray], int] | None = None) -> None:
        self.table = table
        self.collector = collector
        self.sink = sink
        # bpf mode hands it the owners it saw at connect()/listen(): (cookies, pids, comms)
        self.learn_owners = learn_owners


class Mode(Protocol):
    name: str

    def run(self, stop: threading.Event) -> None:
        """Collect until `stop` is set (or the mode's own end, e.g. -maxLoops)."""

    def trigger(self, count: int = 1) -> None:
        """Collect everything now, from any thread (the gRPC poll trigger)."""

    def configure(self, config: Config) -> None:
        """Apply a validated config, from any thread; timers take it from now."""

    def close(self) -> None:
        """Release kernel resources (sockets, programs); run() has returned."""
