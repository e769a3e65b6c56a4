"""Poll mode's close records: destroy broadcasts of every watched namespace -> sink."""
from __future__ import annotations

from ..gen.xtcp_flat_record.v1.fields import TRIGGER
from ..netlink.destroy import DestroyWatcher
from ..netns.registry import NamespaceTable
from ..records.sink import RecordSink


class CloseRecordPump:
    """Call sync() after every reconcile and pump() while waiting for the next poll.
    pump() returns True if a broadcast was lost (ENOBUFS): poll at once."""

    def __init__(self, table: NamespaceTable, sink: RecordSink) -> None:
        self.table = table
        self.sink = sink
        self.watcher = DestroyWatcher()

    def sync(self) -> None:
        self.watcher.sync_with(self.table)

    def fileno(self) -> int:
        return self.watcher.fileno()

    def pump(self, timeout: float) -> bool:
        lost = False
        emitted = 0
        for key, cols, overrun in self.watcher.poll(timeout):
            lost |= overrun
            if not cols.n:
                continue
            ns = self.table.by_key.get(key)
            consts = {"trigger": TRIGGER["TRIGGER_CLOSE"]}
            if ns is not None:
                consts.update(netns=ns.name, netns_inode=ns.inode, nsid=ns.nsid)
            emitted += self.sink.emit(cols, consts)
        if emitted:
            self.sink.flush()
        return lost

    def close(self) -> None:
        self.watcher.close()
