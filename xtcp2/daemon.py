"""Wires the pipeline and runs it: namespaces -> collector -> sink -> emitter, driven by one Mode.

The Daemon is also the control surface other components use: the gRPC API calls
reconfigure() / trigger_poll() and subscribes to records with add_listener().
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

from .collect import NetlinkCollector, PollStats
from .config import Config
from .heartbeat import HeartbeatEvent
from .modes import Mode, Parts
from .netns.registry import NamespaceTable
from .pipeline import Emitter, Listener
from .records.sink import RecordSink

log = logging.getLogger(__name__)
BPF_WALK_SLICE = 0.02   # CPU seconds of /proc reading per join in bpf mode


class Daemon:
    def __init__(self, config: Config, use_bpf: bool = False, bpf_program=None) -> None:
        config.validate()
        self._config = config
        from .identity.cgroup import namespace_owner
        from .identity.join import IdentityJoin
        # a namespace a container owns is named by the container's id
        self.table = NamespaceTable(config.netns, config.packet_size, config.nl_timeout_milliseconds,
                                    config.populate_nsid, owner=namespace_owner)
        self.emitter = Emitter(config)
        self.sink = RecordSink(config, self.emitter)
        self.identity = IdentityJoin.from_config(config)   # pid, comm, container of every record
        self.sink.add_join(self.identity.sink_join)
        self.collector = NetlinkCollector(config, self.table, self.sink)
        from .identity.uplink import UplinkEnricher
        self.uplinks = UplinkEnricher.started(config)
        self.sink.add_join(self.uplinks.stamp)  # uplink1_* / uplink2_* on every record
        self._stop = HeartbeatEvent()  # the mode's run loop checks it every turn: its heartbeat
        self._lock = threading.Lock()
        parts = Parts(self.table, self.collector, self.sink, learn_owners=self.identity.learn)
        self.mode: Mode
        if use_bpf:
            from .modes.bpf import BpfMode
            # the join runs on the event loop: a /proc walk goes on in slices between events
            self.identity.owners.max_slice = BPF_WALK_SLICE
            self.mode = BpfMode(config, parts, program=bpf_program)   # None: it loads its own
            log.info("bpf programs attached (%s)", self.mode.start())
        else:
            from .modes.poll import PollMode
            self.mode = PollMode(config, parts, close_records=not config.once)

    # ---- control surface -------------------------------------------------------
    @property
    def config(self) -> Config:
        return self._config

    @property
    def loops(self) -> int:
        """Scheduled and triggered polls so far (poll mode)."""
        return getattr(self.mode, "loops", 0)

    @property
    def last_stats(self) -> PollStats | None:
        return getattr(self.mode, "last_stats", None)

    def reconfigure(self, new: Config) -> None:
        """Apply a validated config; it takes effect from the next poll."""
        new.validate()
        with self._lock:
            self.emitter.configure(new)
            self.sink.configure(new)
            self.identity.configure(new)
            self.collector.configure(new)
            self.uplinks.configure(new)
            self.mode.configure(new)
            self._config = new
        log.info("configuration updated")

    def trigger_poll(self, count: int = 1) -> None:
        self.mode.trigger(count)

    def add_listener(self, fn: Listener) -> None:
        self.emitter.add_listener(fn)

    def remove_listener(self, fn: Listener) -> None:
        self.emitter.remove_listener(fn)

    def add_poll_hook(self, fn: Callable[[PollStats], None]) -> None:
        """fn(stats) after every poll (poll mode)."""
        hooks = getattr(self.mode, "hooks", None)
        if hooks is not None:
            hooks.append(fn)

    # ---- running -----------------------------------------------------------------
    def poll_once(self) -> PollStats:
        """One poll now, outside the schedule (poll mode; tools and tests)."""
        return self.mode.poll_once()

    def reconcile(self) -> None:
        self.mode.reconcile()

    def run(self) -> None:
        """Collect until stop() (or -maxLoops polls in poll mode)."""
        self.mode.run(self._stop)

    def stop(self) -> None:
        self._stop.set()
        self.collector.stop()  # a poll or resync in progress ends at its next chunk
        self.identity.stop()   # and so does a /proc walk for socket owners
        self.mode.trigger(0)  # wakes a waiting mode to see the stop

    def close(self) -> None:
        self.uplinks.close()
        self.mode.close()
        self.collector.close()
        self.identity.close()
        self.emitter.close()
        self.table.close()
