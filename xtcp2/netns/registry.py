"""The namespaces the daemon watches, each with its open sock_diag socket.

reconcile() brings the table in line with discovery: a new namespace gets a socket
opened inside it (via NetnsEnterer); a namespace no discovery source lists any more
has its socket closed at once, because an open socket keeps a deleted namespace
alive. Identity is the nsfs inode plus the netns cookie of the socket, so a reused
inode number is recognised as a different namespace.
"""
from __future__ import annotations

import logging
import threading

from ..prom_light import Counter, Gauge

from ..netlink.diag import DiagSocket
from .discover import NetnsRef, discover, select
from .enter import NetnsEnterer
from .nsid import get_nsid

log = logging.getLogger(__name__)

NAMESPACES = Gauge("xtcp2_namespaces", "Network namespaces currently watched")
NAMESPACES_ADDED = Counter("xtcp2_namespaces_added_total", "Namespaces that got a netlink socket")
NAMESPACES_REMOVED = Counter("xtcp2_namespaces_removed_total", "Namespaces whose socket was closed because they disappeared")
NAMESPACE_ERRORS = Counter(
    "xtcp2_namespace_errors_total", "Namespaces that could not be entered or vanished mid-dump", ["kind"]
)


class Namespace:
    def __init__(self, ref: NetnsRef, diag: DiagSocket, cookie: int, nsid: int) -> None:
        self.ref = ref
        self.diag = diag
        self.cookie = cookie
        self.nsid = nsid
        self.lock = threading.Lock()   # one dump at a time per socket
        self.broken = False

    def __repr__(self) -> str:
        return f"Namespace({self.ref.name!r}, inode={self.ref.inode}, cookie={self.cookie}, nsid={self.nsid})"

    @property
    def name(self) -> str:
        return self.ref.name

    @property
    def inode(self) -> int:
        return self.ref.inode


class NamespaceTable:
    def __init__(self, names: list[str] | None = None, recv_size: int = 65536, timeout_ms: int = 1000,
                 populate_nsid: bool = True, include_proc: bool = True, owner=None) -> None:
        self.names = list(names or [])
        self.recv_size = recv_size
        self.timeout_ms = timeout_ms
        self.populate_nsid = populate_nsid
        self.include_proc = include_proc
        self.owner = owner   # names a namespace after its container (see discover())
        self.by_key: dict[tuple[int, int], Namespace] = {}
        self.unmatched: list[str] = []  # --netns names no discovery source lists (yet)
        self._enter: NetnsEnterer | None = None   # made on the first entry into another namespace
        self._lock = threading.Lock()
        self._enter_lock = threading.Lock()

    def _open(self, ref: NetnsRef) -> Namespace | None:
        def make() -> DiagSocket:
            return DiagSocket.open(self.recv_size, self.timeout_ms)
        try:
            diag = make() if ref.source == "self" else self.enter().run_in(ref.path, make)
        except (OSError, TimeoutError) as e:
            NAMESPACE_ERRORS.labels("enter").inc()
            log.warning("netns %s (inode %d): cannot open a socket inside: %s", ref.name, ref.inode, e)
            return None
        nsid = get_nsid(ref.path) if self.populate_nsid and ref.source != "self" else -1
        return Namespace(ref, diag, diag.netns_cookie(), max(nsid, 0))

    def reconcile(self) -> tuple[int, int]:
        """Returns (added, removed)."""
        with self._lock:
            everything = discover(self.include_proc, owner=self.owner)
            found = select(everything, self.names)
            self._note_unmatched(everything)
            added = removed = 0
            for key in list(self.by_key):
                ns = self.by_key[key]
                if key not in found or ns.broken:
                    self._close(key, "broken socket, reopening" if ns.broken and key in found else "gone")
                    removed += 1
            for key, ref in found.items():
                known = self.by_key.get(key)
                if known is not None:
                    if known.ref.name != ref.name:
                        # found first through a process's /proc entry, now under its mount
                        # name: records carry the new name from here on, so say so
                        log.info("netns %s: watching (was %s, inode %d)", ref.name, known.ref.name, ref.inode)
                    known.ref = ref
                    continue
                ns = self._open(ref)
                if ns is None:
                    continue
                self.by_key[key] = ns
                added += 1
                NAMESPACES_ADDED.inc()
                log.info("netns %s: watching (inode %d, cookie %d, nsid %d)", ref.name, ref.inode, ns.cookie, ns.nsid)
            NAMESPACES.set(len(self.by_key))
            return added, removed

    def _note_unmatched(self, everything: dict) -> None:
        """Say once when a --netns name matches nothing, and when it appears later: watching
        nothing in silence looks exactly like a host without connections."""
        if not self.names:
            return
        known = {n for r in everything.values() for n in (r.name, *r.aliases)}
        now = [n for n in dict.fromkeys(self.names) if n not in known]
        for name in now:
            if name not in self.unmatched:
                log.warning("--netns %s: no such network namespace (not in /run/netns, /run/docker/netns "
                            "or any process); it is watched if it appears", name)
        for name in self.unmatched:
            if name not in now:
                log.info("--netns %s: namespace appeared", name)
        self.unmatched = now

    def _close(self, key, why: str) -> None:
        ns = self.by_key.pop(key)
        with ns.lock:
            ns.diag.close()
        if why != "shutdown":
            NAMESPACES_REMOVED.inc()
        # at shutdown one line for all (close() says how many), not one per namespace
        log.log(logging.DEBUG if why == "shutdown" else logging.INFO,
                "netns %s: %s, socket closed (inode %d)", ns.name, why, ns.inode)

    def namespaces(self) -> list[Namespace]:
        with self._lock:
            return list(self.by_key.values())

    def by_inode(self, inode: int) -> Namespace | None:
        with self._lock:
            for ns in self.by_key.values():
                if ns.inode == inode:
                    return ns
        return None

    def enter(self) -> NetnsEnterer:
        with self._enter_lock:
            if self._enter is None:
                self._enter = NetnsEnterer()
            return self._enter

    def close(self) -> None:
        with self._lock:
            count = len(self.by_key)
            for key in list(self.by_key):
                self._close(key, "shutdown")
        if count:
            log.info("closed the sockets of %d namespace(s)", count)
        NAMESPACES.set(0)
        with self._enter_lock:
            if self._enter is not None:
                self._enter.close()
                self._enter = None
