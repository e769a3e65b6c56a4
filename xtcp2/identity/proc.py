"""Socket inode -> owning process (pid, comm), as `ss -p` finds it, but incrementally.

`ss -p` reads every /proc/PID/fd/* link of every process each time it runs. Here only
inodes never seen before are looked for: a scan walks /proc in pid order, reads fd
links, and stops as soon as every wanted inode is found. It is bounded (a time budget;
an unfinished walk resumes where it stopped on the next call) and rate limited (a new
walk starts at most every `min_interval` seconds, and not sooner than ten times the
last walk took, so scanning stays under ~10% of the daemon's time). An inode that a
complete walk did not find (a socket no process holds any more) is not looked for
again for `absent_ttl` seconds. The caller (join.py) caches results by socket cookie,
so a socket is looked up once in its life.

The process table (pid -> comm, container) is read once per pid and forgotten when
the pid leaves /proc; a reused pid is recognised by its start time.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

from . import stats
from .cgroup import CgroupIndex, Container, read_proc_cgroup

_SOCKET_PREFIX = "socket:["


@dataclass(frozen=True)
class Process:
    pid: int
    comm: str
    start: int                    # clock ticks since boot: tells a reused pid apart
    container: Container | None
    cgroup_v2: str


def _start_time(proc_root: str, pid: int) -> int | None:
    try:
        with open(f"{proc_root}/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: fields resume after the last ')'
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])   # field 22 of stat, the 20th after comm
    except (IndexError, ValueError):
        return None


def read_process(pid: int, proc_root: str = "/proc") -> Process | None:
    start = _start_time(proc_root, pid)
    if start is None:
        return None
    try:
        with open(f"{proc_root}/{pid}/comm", "rb") as f:
            comm = f.read().rstrip(b"\n").decode("utf-8", "replace")
    except OSError:
        return None
    container, v2 = read_proc_cgroup(pid, proc_root)
    return Process(pid, comm, start, container, v2)


class SocketOwners:
    """Finds the owners of socket inodes; remembers processes."""

    def __init__(self, proc_root: str = "/proc", budget: float = 0.25, min_interval: float = 1.0,
                 absent_ttl: float = 60.0, cgroups: CgroupIndex | None = None, keep_walk: float = 30.0) -> None:
        self.proc_root = proc_root
        self.budget = budget
        self.min_interval = min_interval
        self.absent_ttl = absent_ttl
        self.keep_walk = keep_walk
        self.cgroups = cgroups
        self.processes: dict[int, Process] = {}
        self._absent: dict[int, float] = {}       # inode -> when a full walk missed it
        self._cursor: list[int] = []               # pids the current walk has still to read
        self._walk_map: dict[int, int] = {}        # socket inode -> pid, as read by the current walk
        self._walk_started = 0.0
        self._walk_seconds = 0.0
        self._next_walk = 0.0
        self.walks = 0
        self.links_read = 0

    # ---- processes --------------------------------------------------------------------
    def process(self, pid: int) -> Process | None:
        p = self.processes.get(pid)
        if p is None:
            p = read_process(pid, self.proc_root)
            if p is not None:
                self.processes[pid] = p
                if self.cgroups is not None:
                    self.cgroups.learn(p.cgroup_v2, p.container)
        return p

    def forget_exited(self) -> int:
        """Drop processes that left /proc or whose pid now names another process."""
        gone = [pid for pid, p in self.processes.items() if _start_time(self.proc_root, pid) != p.start]
        for pid in gone:
            del self.processes[pid]
        return len(gone)

    # ---- sockets ----------------------------------------------------------------------
    def wanted(self, inodes) -> list[int]:
        """Of these inodes, those worth a walk (not missed by a recent full walk)."""
        now = time.monotonic()
        absent = self._absent
        if absent and len(absent) > 4 * len(inodes) + 1024:
            for ino in [i for i, t in absent.items() if now - t > self.absent_ttl]:
                del absent[ino]
        return [i for i in inodes if i and (now - absent.get(i, -1e18)) > self.absent_ttl]

    def find_in(self, pids: list[int], inodes: list[int]) -> dict[int, int]:
        """inode -> pid, reading only the fds of `pids` (the processes of one cgroup).

        A targeted look needs no rate limit: its cost is that of the few processes of a
        container, which is where a new socket of a container must be.
        """
        want = set(inodes)
        found: dict[int, int] = {}
        links = 0
        for pid in sorted(pids):
            fd_dir = f"{self.proc_root}/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
            except OSError:
                continue
            links += len(names)
            for name in names:
                try:
                    target = os.readlink(f"{fd_dir}/{name}")
                except OSError:
                    continue
                if target.startswith(_SOCKET_PREFIX):
                    ino = int(target[8:-1])
                    if ino in want:
                        want.discard(ino)
                        found[ino] = pid
            if not want:
                break
        self.links_read += links
        stats.PROC_LINKS.inc(links)
        return found

    def find(self, inodes: list[int]) -> dict[int, int]:
        """inode -> pid for those of `inodes` found; never reads /proc while rate limited.

        A walk records every socket link it reads, so the chunks and namespaces of one
        poll share it: a later call first looks in what the current walk has read, then
        continues it from where it stopped, and starts a new walk only when the current
        one is complete and the rate limit allows. Inodes a complete walk (started for
        them) did not find are remembered as absent.
        """
        if not inodes:
            return {}
        now = time.monotonic()
        if not self._cursor and self._walk_map and now - self._walk_started > self.keep_walk:
            self._walk_map = {}   # an old walk's links may name closed sockets: do not trust it
        seen = self._walk_map
        fresh = False
        result = {i: seen[i] for i in inodes if i in seen}
        remaining = [i for i in inodes if i not in seen]
        if not remaining:
            return result
        if not self._cursor:
            if now < self._next_walk:
                stats.SCAN_DEFERRED.inc()
                return result
            self._cursor = self._pids()
            self._walk_map = seen = {}
            self._walk_started = now
            self.walks += 1
            stats.PROC_WALKS.inc()
            result = {}
            remaining = list(inodes)
            fresh = True
        want = set(remaining)
        t0 = time.monotonic()
        deadline = t0 + self.budget
        cursor = self._cursor
        fd_root = self.proc_root
        readlink = os.readlink
        links = 0
        while cursor and want:
            pid = cursor.pop()
            fd_dir = f"{fd_root}/{pid}/fd"
            try:
                names = os.listdir(fd_dir)
            except OSError:
                continue   # exited, or a kernel thread without fds
            links += len(names)
            for name in names:
                try:
                    target = readlink(f"{fd_dir}/{name}")
                except OSError:
                    continue
                if target.startswith(_SOCKET_PREFIX):
                    ino = int(target[8:-1])
                    if ino not in seen:   # the lowest pid holding it, as ss lists first
                        seen[ino] = pid
                        if ino in want:
                            want.discard(ino)
                            result[ino] = pid
            if time.monotonic() > deadline:
                break
        self.links_read += links
        stats.PROC_LINKS.inc(links)
        end = time.monotonic()
        self._walk_seconds += end - t0
        if cursor and want:
            stats.SCAN_PARTIAL.inc()
        elif not cursor:
            if want and fresh:
                for ino in want:   # a complete walk did not find them: no process holds them
                    self._absent[ino] = end
            # the next walk waits ten times as long as this one took: walking stays <10% of time
            self._next_walk = end + max(self.min_interval, 9 * self._walk_seconds)
            self._walk_seconds = 0.0
        return result

    def _pids(self) -> list[int]:
        try:
            pids = [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]
        except OSError:
            return []
        pids.sort(reverse=True)   # popped from the end: lowest pid first, as ss lists them
        return pids
