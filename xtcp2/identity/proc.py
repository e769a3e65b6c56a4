"""Socket inode -> owning process (pid, comm), as `ss -p` finds it, but incrementally.

`ss -p` reads every /proc/PID/fd/* link of every process each time it runs. Here only
inodes never seen before are looked for, two ways:
- find_in(pids): in the processes of one cgroup (a container's new socket is there);
- find(): a walk of all of /proc in pid order that stops as soon as every wanted inode
  is found; an unfinished walk resumes where it stopped on the next call, and a new
  one starts at most every `min_interval` seconds.
Every link read is remembered for a while, so the chunks and namespaces of one poll
share the reads. All reading draws on one CPU-time budget (a token bucket: `share` of a
core on average, bursts up to `burst` CPU seconds, which the first poll after start uses),
so scanning stays bounded whatever the churn. An inode that a complete walk did not
find (a socket no process holds any more) is not looked for again for `absent_ttl`
seconds. The caller (join.py) caches results by socket cookie, so a socket is looked
up once in its life.

The process table (pid -> comm, container) is read once per pid and forgotten when
the pid leaves /proc; a reused pid is recognised by its start time.
"""
from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

from . import stats
from .cgroup import CgroupIndex, Container, read_proc_cgroup

_SOCKET_PREFIX = "socket:["
_NEVER = float("-inf")


class Process(NamedTuple):
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

    def __init__(self, proc_root: str = "/proc", share: float = 0.1, burst: float = 1.0,
                 min_interval: float = 1.0, absent_ttl: float = 60.0, reread_after: float = 2.0,
                 cgroups: CgroupIndex | None = None, max_slice: float | None = None) -> None:
        self.proc_root = proc_root
        # CPU seconds one call may read at most (None: the whole budget). bpf mode joins
        # on its event loop, where a 1-second walk held every event behind it
        self.max_slice = max_slice
        self.share = share
        self.burst = burst
        self.min_interval = min_interval
        self.absent_ttl = absent_ttl
        self.reread_after = reread_after
        self.cgroups = cgroups
        self.processes: dict[int, Process] = {}
        self._absent: dict[int, float] = {}       # inode -> when a full walk missed it
        self._cursor: list[int] = []               # pids the current walk has still to read
        # the socket inodes of every process read, as of its last read: numpy, not a dict
        # of inode -> pid (~100 bytes a socket: 10-19 MB at the peak of a first poll of
        # 100,000 sockets, against under 2 MB here); looked up through one sorted index
        self._fds: dict[int, np.ndarray] = {}      # pid -> its socket inodes
        self._index: tuple[np.ndarray, np.ndarray] | None = None   # (inodes, lowest pid), sorted
        self._read_at: dict[int, float] = {}       # pid -> when its fds were last read
        self._tokens = burst
        self._refill = time.monotonic()
        self._cpu0 = 0.0
        self._next_walk = 0.0
        self.walks = 0
        self.links_read = 0
        # set by stop() (the daemon is shutting down): reads end at once, whatever the budget,
        # so one process with 100,000 fds cannot hold SIGTERM up
        self.stopping = False

    def stop(self) -> None:
        self.stopping = True

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

    # ---- budget -----------------------------------------------------------------------
    # The budget is CPU time of the reading thread, refilled with wall time at `share`:
    # "10% of a core" whatever the load. Counted in wall time, a loaded host (a thread
    # that waits for a CPU) spent it without reading, and owners stayed unresolved for
    # many polls, each poll paying again to look the rest up.
    def _deadline(self, now: float) -> float | None:
        """Until when (time.thread_time()) this call may read /proc; None when spent."""
        self._tokens = min(self.burst, self._tokens + (now - self._refill) * self.share)
        self._refill = now
        if self._tokens <= 0:
            stats.SCAN_DEFERRED.inc()
            return None
        self._cpu0 = time.thread_time()
        slice_ = self._tokens if self.max_slice is None else min(self._tokens, self.max_slice)
        return self._cpu0 + slice_

    def _spend(self) -> None:
        self._tokens -= time.thread_time() - self._cpu0

    # ---- sockets ----------------------------------------------------------------------
    def wanted(self, inodes) -> list[int]:
        """Of these inodes, those worth looking for (not missed by a recent full walk)."""
        now = time.monotonic()
        absent = self._absent
        if absent and len(absent) > 4 * len(inodes) + 1024:
            for ino in [i for i, t in absent.items() if now - t > self.absent_ttl]:
                del absent[ino]
        return [i for i in inodes if i and (now - absent.get(i, -1e18)) > self.absent_ttl]

    def _read(self, pid: int, want: set[int], found: dict[int, int], now: float) -> int:
        """Read pid's fd links; move wanted inodes it holds to found. Links read."""
        self._read_at[pid] = now
        try:
            # links read relative to the directory: no path walk per link (~20% less CPU)
            dfd = os.open(f"{self.proc_root}/{pid}/fd", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            self._forget_fds(pid)
            return 0   # exited, or a kernel thread without fds
        try:
            names = os.listdir(dfd)
        except OSError:
            os.close(dfd)
            self._forget_fds(pid)
            return 0
        readlink = os.readlink
        inodes: list[int] = []
        try:
            for i, name in enumerate(names):
                if not i & 1023 and self.stopping:
                    break
                try:
                    target = readlink(name, dir_fd=dfd)
                except OSError:
                    continue
                if target.startswith(_SOCKET_PREFIX):
                    ino = int(target[8:-1])
                    inodes.append(ino)
                    # the walk goes lowest pid first, as ss lists the holders of a shared socket
                    if ino in want:
                        want.discard(ino)
                        found[ino] = pid
        finally:
            os.close(dfd)
        self._fds[pid] = np.array(inodes, np.uint64)
        self._index = None
        return len(names)

    def _forget_fds(self, pid: int) -> None:
        if self._fds.pop(pid, None) is not None:
            self._index = None

    def _lookup(self, inodes: np.ndarray) -> np.ndarray:
        """The lowest pid holding each inode as last read, 0 if none."""
        if self._index is None:
            if self._fds:
                pids = np.fromiter(self._fds.keys(), np.int64, len(self._fds))
                arrays = list(self._fds.values())
                keys = np.concatenate(arrays)
                holder = np.repeat(pids, [len(a) for a in arrays])
                order = np.lexsort((holder, keys))   # by inode, then pid
                keys, holder = keys[order], holder[order]
                first = np.ones(len(keys), bool)
                first[1:] = keys[1:] != keys[:-1]
                self._index = (keys[first], holder[first])
            else:
                self._index = (np.empty(0, np.uint64), np.empty(0, np.int64))
        keys, holder = self._index
        out = np.zeros(len(inodes), np.int64)
        if len(keys):
            pos = np.minimum(np.searchsorted(keys, inodes), len(keys) - 1)
            hit = keys[pos] == inodes
            out[hit] = holder[pos[hit]]
        return out

    def _known(self, inodes, want: set[int], found: dict[int, int], now: float) -> None:
        """Inodes the last reads answer (read recently enough to trust); the rest go to want."""
        q = np.asarray(inodes, np.uint64)
        pids = self._lookup(q)
        read_at = self._read_at
        trusted = {p for p in set(pids.tolist()) if p and read_at.get(p, _NEVER) >= now - self.absent_ttl}
        for ino, pid in zip(q.tolist(), pids.tolist()):
            if pid in trusted:
                found[ino] = pid
            else:
                want.add(ino)

    def find_in(self, pids: list[int], inodes: list[int]) -> dict[int, int]:
        """inode -> pid, reading only the fds of `pids` (the processes of one cgroup).

        A process read in the last `reread_after` seconds is not read again: the chunks
        of one poll share the reads.
        """
        now = time.monotonic()
        found: dict[int, int] = {}
        want: set[int] = set()
        self._known(inodes, want, found, now)
        read_at = self._read_at
        # processes never read first, then the longest unread: when the budget stops a
        # read short, the next one goes on where it stopped instead of re-reading the first
        todo = sorted((p for p in pids if read_at.get(p, _NEVER) < now - self.reread_after),
                      key=lambda p: (read_at.get(p, _NEVER), p))
        if not want or not todo:
            return found
        deadline = self._deadline(now)
        if deadline is None:
            return found
        links = 0
        for pid in todo:
            links += self._read(pid, want, found, now)
            if not want or time.thread_time() > deadline or self.stopping:
                break
        self._spend()
        self.links_read += links
        stats.PROC_LINKS.inc(links)
        return found

    def find(self, inodes: list[int]) -> dict[int, int]:
        """inode -> pid for those of `inodes` found; never reads /proc beyond the budget.

        Looks in what recent reads saw, then continues the current walk of /proc, or
        starts one when the last is complete and `min_interval` has passed. Inodes a
        complete walk started for them did not find are remembered as absent.
        """
        if not inodes:
            return {}
        now = time.monotonic()
        found: dict[int, int] = {}
        want: set[int] = set()
        self._known(inodes, want, found, now)
        if not want:
            return found
        fresh = False
        if not self._cursor:
            if now < self._next_walk:
                stats.SCAN_DEFERRED.inc()
                return found
            fresh = True
        deadline = self._deadline(now)
        if deadline is None:
            return found
        if fresh:
            self._cursor = self._pids()
            self._prune(now)
            self.walks += 1
            stats.PROC_WALKS.inc()
        cursor = self._cursor
        links = 0
        while cursor and want:
            pid = cursor.pop()
            if self._read_at.get(pid, _NEVER) >= now - self.reread_after and not fresh:
                continue
            links += self._read(pid, want, found, now)
            if time.thread_time() > deadline or self.stopping:
                break
        self._spend()
        self.links_read += links
        stats.PROC_LINKS.inc(links)
        if cursor and want:
            stats.SCAN_PARTIAL.inc()
        elif not cursor:
            end = time.monotonic()
            if want and fresh:
                for ino in want:   # a complete walk did not find them: no process holds them
                    self._absent[ino] = end
            self._next_walk = end + self.min_interval
        return found

    def _prune(self, now: float) -> None:
        """Forget links of processes not read for a while (they may have closed them)."""
        old = [pid for pid, t in self._read_at.items() if t < now - self.absent_ttl]
        for pid in old:
            del self._read_at[pid]
            self._forget_fds(pid)

    def _pids(self) -> list[int]:
        try:
            pids = [int(n) for n in os.listdir(self.proc_root) if n.isdigit()]
        except OSError:
            return []
        pids.sort(reverse=True)   # popped from the end: lowest pid first, as ss lists them
        return pids
