"""Identity as a join on columns: decoded socket columns in, identity columns out.

Given a chunk's columns (socket cookie, inode, cgroup id) and its constants (namespace),
`IdentityJoin.join` returns extra columns: pid, comm, container_id, container_runtime,
container_name, container_image and the Kubernetes pod fields. All per-row work is numpy:

- sockets: a cache sorted by cookie (a cookie is never reused; an inode can be) maps
  every known socket to a row of the process table: one searchsorted per chunk. Only
  rows whose cookie is new go to proc.py, which looks their inodes up in /proc.
- containers: np.unique over the chunk's cgroup ids (a handful of distinct values),
  each looked up once in the cgroup index (the fast path, cgroup v2); then, for rows
  it did not resolve, the container of the owning process; then, for sockets with no
  owner at all (TIME_WAIT, orphans), the container that owns the namespace.
- strings: one small table per distinct container or process, gathered per row with
  one fancy index into BytesColumns that the columnar encoder writes as is.

Sockets leave the cache when a close record passes through the join, or when no
record has mentioned them for `ttl` seconds.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from ..columns import merge_sorted, unique
from ..netlink.decode import BytesColumn
from . import stats
from .cgroup import CgroupIndex, Container
from .owner_events import OwnerEvents
from .proc import Process, SocketOwners

if TYPE_CHECKING:  # the Docker client (http.client, ssl, email) loads only for -enrichContainer
    from .docker import ContainerInfo, DockerMetadata

log = logging.getLogger(__name__)

TRIGGER_CLOSE = 2
MAX_STRING = 127      # the columnar encoder writes one-byte lengths
CONTAINER_COLUMNS = ("container_id", "container_runtime", "container_name", "container_image",
                     "k8s_pod_name", "k8s_pod_namespace", "k8s_container_name")
COLUMNS = CONTAINER_COLUMNS + ("pid", "comm")
_HEX64 = re.compile(r"[0-9a-f]{64}")


def _clip(s: str) -> bytes:
    raw = s.encode()
    if len(raw) > MAX_STRING:  # cut on a character boundary: string fields must stay UTF-8
        raw = raw[:MAX_STRING].decode("utf-8", "ignore").encode()
    return raw


def _table(values: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """(k+1, width) byte table and lengths; the last row is the empty string (index -1)."""
    width = max(1, max(map(len, values), default=1))
    data = np.zeros((len(values) + 1, width), np.uint8)
    lens = np.zeros(len(values) + 1, np.uint8)
    for i, v in enumerate(values):
        data[i, :len(v)] = np.frombuffer(v, np.uint8)
        lens[i] = len(v)
    return data, lens


def _distinct(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """np.unique(a, return_inverse=True), without the sort when every value is the same
    (a batch of one namespace usually has one container, one cgroup)."""
    if len(a) and a[0] == a.min() == a.max():
        return a[:1], np.zeros(len(a), np.intp)
    return np.unique(a, return_inverse=True)


class IdentityJoin:
    """Owns the identity caches and answers one join per chunk of records."""

    def __init__(self, resolve_process: bool = True, resolve_container_id: bool = False,
                 enrich_container: bool = False, docker_socket: str = "", proc_root: str = "/proc",
                 cgroup_root: str | None = None, ttl: float = 60.0, docker: DockerMetadata | None = None) -> None:
        self.resolve_process = resolve_process
        self.resolve_container = resolve_container_id or enrich_container
        self.ttl = ttl
        self.cgroups = CgroupIndex(cgroup_root, proc_root)
        self.owners = SocketOwners(proc_root, cgroups=self.cgroups)
        self.docker = docker
        if enrich_container and docker is None:
            from .docker import DockerMetadata
            self.docker = DockerMetadata(docker_socket).start()
        self._lock = threading.Lock()
        # sockets: sorted cookies -> row of the process table, last time seen
        self._keys = np.empty(0, np.uint64)
        self._owner = np.empty(0, np.int32)
        self._seen = np.empty(0, np.float64)
        # processes (rows referenced by _owner) and containers
        self._procs: list[Process] = []
        self._proc_row: dict[int, int] = {}
        self._proc_pid = np.empty(0, np.uint32)
        self._proc_cont = np.empty(0, np.int32)
        self._comm = _table([])
        self._conts: list[Container] = []
        self._cont_row: dict[str, int] = {}
        self._ns_owner: dict[int, int] = {}      # netns inode -> container row
        self._events = OwnerEvents()              # owners from bpf events, until a record asks
        self._last_sweep = time.monotonic()

    @classmethod
    def from_config(cls, config) -> "IdentityJoin":
        j = cls(resolve_process=False)
        j.configure(config)
        return j

    def configure(self, config) -> None:
        """Apply -resolveProcess, -resolveContainerId, -enrichContainer and -dockerSocket."""
        self.resolve_process = config.resolve_process
        self.resolve_container = config.resolve_container_id or config.enrich_container_enable
        # a socket unseen for three polls (and at least a minute) is gone
        self.ttl = max(60.0, 3 * config.poll_frequency)
        old = self.docker
        if config.enrich_container_enable:
            from .docker import DEFAULT_SOCKET, DockerMetadata
            path = config.docker_socket_path or DEFAULT_SOCKET
        if config.enrich_container_enable and (old is None or old.socket_path != path):
            self.docker = DockerMetadata(path).start()
        elif not config.enrich_container_enable:
            self.docker = None
        if old is not None and old is not self.docker:
            old.close()

    @property
    def enabled(self) -> bool:
        return self.resolve_process or self.resolve_container

    def stop(self) -> None:
        """From any thread, at shutdown: /proc reads in progress end now."""
        self.owners.stop()

    def close(self) -> None:
        if self.docker is not None:
            self.docker.close()

    # ---- tables ------------------------------------------------------------------------
    def _container_row(self, c: Container | None) -> int:
        if c is None:
            return -1
        row = self._cont_row.get(c.id)
        if row is None:
            row = self._cont_row[c.id] = len(self._conts)
            self._conts.append(c)
        return row

    def _process_rows(self, pids: list[int]) -> list[int]:
        rows = []
        added = False
        for pid in pids:
            row = self._proc_row.get(pid)
            if row is None:
                p = self.owners.process(pid)
                if p is None:
                    rows.append(-1)
                    continue
                row = self._proc_row[pid] = len(self._procs)
                self._procs.append(p)
                added = True
            rows.append(row)
        if added:
            self._rebuild_process_arrays()
        return rows

    def _rebuild_process_arrays(self) -> None:
        self._proc_pid = np.array([p.pid for p in self._procs], np.uint32)
        self._proc_cont = np.array([self._container_row(p.container) for p in self._procs], np.int32)
        self._comm = _table([_clip(p.comm) for p in self._procs])
        stats.CACHE.labels("processes").set(len(self._procs))

    # ---- owners the kernel saw (bpf mode) ---------------------------------------------------
    def learn(self, cookies: np.ndarray, pids: np.ndarray, comms: np.ndarray) -> int:
        """Owners that bpf mode took in process context (the task in connect() or listen()),
        per ring buffer read. They wait in a side table (owner_events.py): events come from
        every namespace, watched or not, and only a record that misses the cache asks,
        before any /proc walk. Returns the owners kept."""
        if not self.resolve_process or not len(cookies):
            return 0
        cookies = np.asarray(cookies, np.uint64)
        keep = cookies != 0
        with self._lock:
            self._events.add(cookies[keep], np.asarray(pids)[keep], np.asarray(comms)[keep], time.monotonic())
        return int(keep.sum())

    def _from_events(self, cookies: np.ndarray, owner: np.ndarray, now: float) -> None:
        """Owners of uncached sockets from the events (in place in owner), cached like the walk's."""
        miss = np.flatnonzero(owner < 0)
        if not len(miss):
            return
        found, pids, comms = self._events.find(cookies[miss], now)
        if not found.any():
            return
        pids, comms = pids[found], comms[found]
        upids, first, inv = np.unique(pids, return_index=True, return_inverse=True)
        rows = self._process_rows(upids.tolist())
        gone = [i for i, r in enumerate(rows) if r < 0]
        if gone:
            for i in gone:   # exited already: the event's pid and comm (no _proc_row: pids are reused)
                rows[i] = len(self._procs)
                self._procs.append(Process(int(upids[i]), bytes(comms[first[i]]).decode("utf-8", "replace"),
                                           -1, None, ""))
            self._rebuild_process_arrays()
        added = self._cache_owners(cookies, owner, miss[found], np.array(rows, np.int32)[inv], now)
        stats.OWNERS_LEARNED.inc(added)

    # ---- sockets -----------------------------------------------------------------------
    def _lookup(self, cookies: np.ndarray, now: float) -> np.ndarray:
        """Process-table row per cookie, -1 when the socket is not cached."""
        keys = self._keys
        out = np.full(len(cookies), -1, np.int32)
        if len(keys):
            pos = np.searchsorted(keys, cookies)
            np.minimum(pos, len(keys) - 1, out=pos)
            hit = keys[pos] == cookies
            hp = pos[hit]
            out[hit] = self._owner[hp]
            self._seen[hp] = now
        return out

    def _resolve_new(self, cookies: np.ndarray, inodes: np.ndarray, cgroups, owner: np.ndarray, now: float) -> None:
        """Find owners of uncached sockets in /proc; cache the ones found (in place in owner).

        Sockets whose cgroup holds few processes (a container's) are looked for in those
        processes only; the rest wait for the (rate limited) walk of all of /proc.
        """
        miss = np.flatnonzero((owner < 0) & (inodes > 0))
        if not len(miss):
            return
        found: dict[int, int] = {}
        if cgroups is not None and self.cgroups.available:
            cg = np.asarray(cgroups)[miss]
            ucg, inv = np.unique(cg, return_inverse=True)
            known = self.cgroups.lookup_many([i for i in ucg.tolist() if i])
            for k, cid in enumerate(ucg.tolist()):
                if not cid or known.get(cid) is None:
                    continue   # host cgroups: many processes, left to the walk
                pids = self.cgroups.procs(cid)
                if pids:
                    found.update(self.owners.find_in(pids, unique(inodes[miss[inv == k]]).tolist()))
        rest = unique(inodes[miss])
        if found:
            rest = rest[~np.isin(rest, np.fromiter(found.keys(), np.uint64, len(found)))]
        if len(rest):
            found.update(self.owners.find(self.owners.wanted(rest.tolist())))
        if not found:
            return
        f_inodes = np.fromiter(found.keys(), np.uint64, len(found))
        f_rows = np.array(self._process_rows(list(found.values())), np.int32)
        order = np.argsort(f_inodes)
        f_inodes, f_rows = f_inodes[order], f_rows[order]
        q = inodes[miss].astype(np.uint64)
        pos = np.minimum(np.searchsorted(f_inodes, q), len(f_inodes) - 1)
        hit = (f_inodes[pos] == q) & (f_rows[pos] >= 0)
        self._cache_owners(cookies, owner, miss[hit], f_rows[pos[hit]], now)

    def _cache_owners(self, cookies: np.ndarray, owner: np.ndarray, rows: np.ndarray, vals: np.ndarray,
                      now: float) -> int:
        """Owners found for these rows (process-table rows vals): into owner, in place, and
        into the cache by cookie. Returns the sockets cached."""
        owner[rows] = vals
        new_keys, first = np.unique(cookies[rows], return_index=True)
        self._insert(new_keys, vals[first], now)
        return len(new_keys)

    def _insert(self, keys: np.ndarray, owners: np.ndarray, now: float) -> None:
        """Add sorted unique cookies not in the cache: merged in at their sorted places
        (one copy, no sort of the whole cache; bpf mode inserts a few every step)."""
        self._keys, self._owner, self._seen = merge_sorted([self._keys, self._owner, self._seen],
                                                          [keys, owners, np.full(len(keys), now)])
        stats.CACHE.labels("sockets").set(len(self._keys))

    def _drop(self, keep: np.ndarray) -> None:
        self._keys, self._owner, self._seen = self._keys[keep], self._owner[keep], self._seen[keep]
        stats.CACHE.labels("sockets").set(len(self._keys))

    def forget(self, cookies: np.ndarray) -> None:
        """Closed sockets leave the cache."""
        keys = self._keys
        if len(keys) and len(cookies):
            # searchsorted, not np.isin: that sorts the whole cache at every call
            pos = np.minimum(np.searchsorted(keys, cookies), len(keys) - 1)
            pos = pos[keys[pos] == cookies]
            if len(pos):
                keep = np.ones(len(keys), bool)
                keep[pos] = False
                self._drop(keep)

    def sweep(self, now: float | None = None) -> None:
        """Drop sockets unseen for ttl, exited processes and containers nothing refers to."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._last_sweep = now
            if len(self._keys):
                self._drop(self._seen >= now - self.ttl)
            self.owners.forget_exited()
            alive = self.owners.processes
            keep_rows = [i for i, p in enumerate(self._procs) if alive.get(p.pid) is p]
            remap = np.full(len(self._procs) + 1, -1, np.int32)   # index -1 stays -1
            remap[keep_rows] = np.arange(len(keep_rows), dtype=np.int32)
            self._owner = remap[self._owner]
            if len(self._keys):
                self._drop(self._owner >= 0)
            self._procs = [self._procs[i] for i in keep_rows]
            self._proc_row = {p.pid: i for i, p in enumerate(self._procs)}
            # containers: those the remaining processes name (cgroup-id hits come back on use)
            conts = {p.container.id: p.container for p in self._procs if p.container is not None}
            self._conts, self._cont_row = [], {}
            for c in conts.values():
                self._container_row(c)
            # namespace owners are looked up again from the names records carry: entries of
            # deleted namespaces must not pile up
            self._ns_owner = {}
            self._rebuild_process_arrays()

    # ---- namespace owners -----------------------------------------------------------------
    def _namespace_owner(self, netns: str, inode: int) -> int:
        row = self._ns_owner.get(inode)
        if row is None:
            row = -1
            if _HEX64.fullmatch(netns):   # the namespace is named after the container owning it
                known = self._cont_row.get(netns)
                row = known if known is not None else self._container_row(Container(netns, ""))
            self._ns_owner[inode] = row
        return row

    # ---- the join --------------------------------------------------------------------------
    def apply(self, cols: dict, n: int, consts: Mapping[str, Any]) -> Mapping[str, Any]:
        """Add identity to a batch about to be encoded: per-row columns go into `cols` (in
        place), values shared by every row into the returned constants (`consts` itself when
        there are none)."""
        extra = self.join(cols, n, consts)
        if not extra:
            return consts
        shared = {k: v for k, v in extra.items() if isinstance(v, (str, int))}
        cols.update((k, v) for k, v in extra.items() if k not in shared)
        return dict(consts, **shared) if shared else consts

    def sink_join(self, cols, consts: dict) -> None:
        """The same as apply(), in the shape of a record sink's join hook: per-row columns
        into `cols`, batch-wide values into `consts`, both in place."""
        n = getattr(cols, "n", None)
        if n is None:
            cookies = cols.get("inet_diag_msg_socket_cookie")
            n = 0 if cookies is None else len(cookies)
        extra = self.join(cols, n, consts)
        for k, v in extra.items():
            if isinstance(v, (str, int)):
                consts[k] = v
            else:
                cols[k] = v

    def join(self, cols: Mapping[str, Any], n: int, consts: Mapping[str, Any]) -> dict[str, Any]:
        """Identity of n records: {field: per-row column, or a str/int the same for every row}
        (empty when there is nothing to add)."""
        if n == 0 or not self.enabled:
            return {}
        now = time.monotonic()
        if now - self._last_sweep > self.ttl:
            self.sweep(now)
        closing = np.broadcast_to(np.asarray(consts.get("trigger", cols.get("trigger", 0))) == TRIGGER_CLOSE, (n,))
        with self._lock:
            out = self._join_locked(cols, n, consts, closing, now)
            if closing.any():
                cookies = cols.get("inet_diag_msg_socket_cookie")
                if cookies is not None:
                    self.forget(np.asarray(cookies)[closing])
        return out

    def _join_locked(self, cols, n: int, consts, closing: np.ndarray, now: float) -> dict[str, Any]:
        out: dict[str, Any] = {}
        cookies = cols.get("inet_diag_msg_socket_cookie")
        owner = np.full(n, -1, np.int32)
        if self.resolve_process and cookies is not None:
            cookies = np.asarray(cookies, np.uint64)
            owner = self._lookup(cookies, now)
            if len(self._events):
                self._from_events(cookies, owner, now)
            inodes = cols.get("inet_diag_msg_inode")
            if inodes is not None:
                inodes = np.asarray(inodes)
                # a closed socket's fd is gone: no /proc walk can find it any more
                look = np.where(closing, 0, inodes) if closing.any() else inodes
                self._resolve_new(cookies, look, cols.get("c_group"), owner, now)
            # a socket past its process (TIME_WAIT keeps the cookie, loses the inode) still
            # names its container through the cache, but no longer a process; a close record
            # names the process that held the socket until then
            held = owner if inodes is None else np.where((inodes != 0) | closing, owner, -1)
            has = held >= 0
            if has.any():
                stats.RECORDS.labels("process").inc(int(has.sum()))
                if held[0] >= 0 and held.min() == held.max():   # one process holds them all
                    p = self._procs[int(held[0])]
                    out["pid"], out["comm"] = p.pid, _clip(p.comm).decode()
                else:
                    out["pid"] = np.where(has, self._proc_pid[held], 0).astype(np.uint32)
                    data, lens = self._comm
                    out["comm"] = BytesColumn(data[held], lens[held])   # row -1 is the empty string
        if not self.resolve_container:
            return out
        cont = np.full(n, -1, np.int32)
        cg = cols.get("c_group")
        if cg is not None and self.cgroups.available:
            uniq, inv = _distinct(np.asarray(cg))
            found = self.cgroups.lookup_many(uniq.tolist())
            per = np.array([self._container_row(found.get(i)) if i else -1 for i in uniq.tolist()], np.int32)
            cont = per[inv]
        if self.resolve_process and len(self._proc_cont):
            need = (cont < 0) & (owner >= 0)
            if need.any():
                cont[need] = self._proc_cont[owner[need]]
        # sockets no process can hold (TIME_WAIT, request and orphaned sockets have no
        # inode): the container owning the namespace. A socket whose owner is still being
        # looked up stays unnamed rather than being guessed.
        orphan = (cont < 0) & (owner < 0)
        inodes = cols.get("inet_diag_msg_inode")
        if inodes is not None:
            orphan &= np.asarray(inodes) == 0
        if cg is not None:
            orphan &= np.asarray(cg) == 0
        if orphan.any():
            self._namespace_fallback(cols, consts, cont, orphan)
        if not (cont >= 0).any():
            return out
        stats.RECORDS.labels("container").inc(int((cont >= 0).sum()))
        out.update(self._container_columns(cont))
        return out

    def _namespace_fallback(self, cols, consts, cont: np.ndarray, orphan: np.ndarray) -> None:
        netns, ino = consts.get("netns"), consts.get("netns_inode")
        if isinstance(netns, str) and ino is not None:
            row = self._namespace_owner(netns, int(ino))
            if row >= 0:
                cont[orphan] = row
            return
        inos = cols.get("netns_inode")
        if inos is None:
            return
        # merged parts (bpf mode): namespaces seen with their names before
        uniq, inv = np.unique(np.asarray(inos), return_inverse=True)
        per = np.array([self._ns_owner.get(int(i), -1) for i in uniq.tolist()], np.int32)
        cont[orphan] = per[inv][orphan]

    def _container_columns(self, cont: np.ndarray) -> dict[str, Any]:
        rows, inv = _distinct(cont)
        docker = self.docker   # configure() may swap it meanwhile
        fields: list[list[bytes]] = [[] for _ in CONTAINER_COLUMNS]
        for r in rows.tolist():
            if r < 0:
                vals = ("",) * len(CONTAINER_COLUMNS)
            else:
                c = self._conts[r]
                info: ContainerInfo | None = docker.get(c.id) if docker is not None else None
                if info is None:
                    vals = (c.id, c.runtime) + ("",) * (len(CONTAINER_COLUMNS) - 2)
                else:
                    vals = (c.id, info.runtime or c.runtime, info.name, info.image,
                            info.pod_name, info.pod_namespace, info.pod_container)
            for f, v in zip(fields, vals):
                f.append(_clip(v))
        out: dict[str, Any] = {}
        for name, vals in zip(CONTAINER_COLUMNS, fields):
            if len(vals) == 1:   # one container for the whole batch: a constant, encoded once
                if vals[0]:
                    out[name] = vals[0].decode()
            elif any(vals):
                data, lens = _table(vals)
                out[name] = BytesColumn(data[inv], lens[inv])
        return out
