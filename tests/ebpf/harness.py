"""Run a BpfMode in a thread over the real pipeline and capture what it emits."""
from __future__ import annotations

import contextlib
import threading

from xtcp2.collect import NetlinkCollector
from xtcp2.config import FIELDS, Config
from xtcp2.modes import Parts
from xtcp2.modes.bpf import BpfMode
from xtcp2.gen.xtcp_flat_record.v1 import xtcp_flat_record_pb2 as pb
from xtcp2.netns.registry import NamespaceTable
from xtcp2.pipeline import Emitter
from xtcp2.records.sink import RecordSink

T = pb.XtcpFlatRecord


class Capture:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def __call__(self, env) -> None:
        with self.lock:
            self.bodies.append(env.body)

    def records(self) -> list:
        with self.lock:
            bodies = list(self.bodies)
        out = []
        for b in bodies:
            out.extend(pb.Envelope.FromString(b).row)
        return out


@contextlib.contextmanager
def running(names: list[str], frequency: float = 10.0, resync: float | None = None, **kw):
    settings = {k: kw.pop(k) for k in list(kw) if k in FIELDS}  # e.g. bpf_close_wait
    if resync is not None:
        settings["resync_frequency"] = resync
    cfg = Config(mode="bpf", dest="null", poll_frequency=frequency, poll_timeout=min(5.0, frequency), netns=names,
                 **settings).validate()
    table = NamespaceTable(names, cfg.packet_size, cfg.nl_timeout_milliseconds, cfg.populate_nsid)
    emitter = Emitter(cfg)
    cap = Capture()
    emitter.add_listener(cap)
    sink = RecordSink(cfg, emitter)
    poller = NetlinkCollector(cfg, table, sink)
    col = BpfMode(cfg, Parts(table, poller, sink), **kw)
    stop = threading.Event()
    t = None
    try:
        col.start()
        t = threading.Thread(target=col.run, args=(stop,), daemon=True)
        t.start()
        assert col.ready.wait(30), "start-up resync did not finish"
        yield col, cap
    finally:
        stop.set()
        if t is not None:
            t.join(30)
        col.close()
        poller.close()
        emitter.close()
        table.close()
