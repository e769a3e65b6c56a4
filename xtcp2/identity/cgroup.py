"""Which container a process or a socket belongs to, from its cgroup.

Two ways in:
- a process: the paths in /proc/PID/cgroup (cgroup v1 lines "N:controllers:/path" and
  the v2 line "0::/path") name the container for every runtime we know;
- a socket: the kernel's INET_DIAG_CGROUP_ID (the `cgroup` deserializer, field c_group)
  is the id of the socket's cgroup v2 directory, which is that directory's inode. An
  index of directory inode -> container over the cgroup2 tree answers it without
  knowing the process: the fast path.

Runtimes name their cgroups differently (systemd driver: "<prefix>-<id>.scope", cgroupfs
driver: a bare id under a runtime-named parent); the path is read deepest component
first, so a sub-cgroup of a container (".../docker-<id>.scope/init") still resolves.
Container ids are 64 lowercase hex characters in every runtime; requiring that keeps
unrelated directories (systemd units, pod slices) from matching.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from typing import NamedTuple

log = logging.getLogger(__name__)

_HEX64 = re.compile(r"[0-9a-f]{64}")
# systemd-driver scope prefixes -> runtime. "libpod-conmon-" is podman's monitor process,
# not the container, and is deliberately absent.
_SCOPE_PREFIXES = (
    ("docker-", "docker"),
    ("cri-containerd-", "containerd"),
    ("crio-", "cri-o"),
    ("libpod-", "podman"),
    ("nerdctl-", "containerd"),
)
# cgroupfs-driver parents of a bare id (v1 and v2 alike) -> runtime
_PARENTS = {"docker": "docker", "libpod_parent": "podman", "machine.slice": "podman",
            "lxc.payload": "lxc", "moby": "docker"}


class Container(NamedTuple):
    id: str
    runtime: str


def parse_leaf(name: str, parent: str = "", under_kubepods: bool = False) -> Container | None:
    """The container a single path component names, if any."""
    for suffix in (".scope", ""):
        if suffix and not name.endswith(suffix):
            continue
        stem = name[: len(name) - len(suffix)] if suffix else name
        for prefix, runtime in _SCOPE_PREFIXES:
            if stem.startswith(prefix) and _HEX64.fullmatch(stem[len(prefix):]):
                return Container(stem[len(prefix):], runtime)
    if _HEX64.fullmatch(name):
        if parent in _PARENTS:
            return Container(name, _PARENTS[parent])
        # CRI with the cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>. cri-o prefixes its
        # ids with "crio-" there too, so a bare id is containerd's (or cri-dockerd's, which
        # the Docker API then corrects).
        return Container(name, "containerd" if under_kubepods else "cgroupfs")
    return None


def parse_path(path: str) -> Container | None:
    """Container named by a cgroup path ("/docker/<id>", ".../cri-containerd-<id>.scope")."""
    parts = [p for p in path.split("/") if p]
    kube = any(p.startswith("kubepods") for p in parts)
    for i in range(len(parts) - 1, -1, -1):
        c = parse_leaf(parts[i], parts[i - 1] if i else "", kube)
        if c is not None:
            return c
    return None


def parse_proc_cgroup(text: str) -> tuple[Container | None, str]:
    """(container, v2 path) from the text of /proc/PID/cgroup.

    The v2 line wins when it names a container; a v1 hierarchy is consulted otherwise
    (hosts with v1 controllers only put the container's path there). The v2 path is
    returned even when it names none, so callers can map it to a cgroup id.
    """
    v2 = ""
    found = None
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        hid, _, path = parts
        if hid == "0":
            v2 = path
            c = parse_path(path)
            if c is not None:
                return c, v2
        elif found is None:
            found = parse_path(path)
    return found, v2


def read_proc_cgroup(pid: int, proc_root: str = "/proc") -> tuple[Container | None, str]:
    try:
        with open(f"{proc_root}/{pid}/cgroup", encoding="utf-8", errors="replace") as f:
            return parse_proc_cgroup(f.read())
    except OSError:
        return None, ""


def cgroup2_mount(proc_root: str = "/proc") -> str | None:
    """Mount point of the cgroup2 hierarchy (/sys/fs/cgroup, or /sys/fs/cgroup/unified on hybrid hosts)."""
    try:
        with open(f"{proc_root}/self/mountinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                if right.split(" ", 1)[0] == "cgroup2":
                    fields = left.split()
                    if len(fields) >= 5 and fields[3] == "/":
                        return fields[4].replace("\\040", " ")
    except OSError:
        pass
    return None


class CgroupIndex:
    """cgroup v2 id (directory inode) -> Container, or None for a directory no container owns.

    Built by walking the cgroup2 tree (directories only; a host has hundreds to a few
    thousand); rebuilt when a lookup misses (a cgroup created since), waiting at least
    `min_interval` and ten times the last walk's cost between walks, so a burst of new
    sockets costs one walk. Directories learned
    from /proc/PID/cgroup are added as they come. Lookups never touch the filesystem.
    """

    def __init__(self, root: str | None = None, proc_root: str = "/proc", min_interval: float = 0.05,
                 max_dirs: int = 200_000) -> None:
        self.root = root if root is not None else cgroup2_mount(proc_root)
        self.min_interval = min_interval
        self.max_dirs = max_dirs
        self._map: dict[int, Container | None] = {}
        self._paths: dict[int, str] = {}   # cgroup id -> path below the root
        self._lock = threading.Lock()
        self._next = 0.0
        self.walks = 0

    @property
    def available(self) -> bool:
        return bool(self.root) and os.path.isdir(self.root)

    def get(self, cgroup_id: int) -> tuple[bool, Container | None]:
        """(known, container). known is False for an id the last walk did not see."""
        c = self._map.get(cgroup_id, _MISSING)
        if c is _MISSING:
            return False, None
        return True, c

    def lookup_many(self, ids) -> dict[int, Container | None]:
        """Containers of distinct ids; one rebuild (rate limited) if any is unknown."""
        if not self.available:
            return {}
        if any(i not in self._map for i in ids):
            self.rebuild()
        m = self._map
        return {i: m.get(i) for i in ids}

    def learn(self, v2_path: str, container: Container | None) -> None:
        """Map the directory of a process's v2 path to its container (one stat)."""
        if not self.root or not v2_path:
            return
        rel = v2_path.rstrip("/")
        try:
            ino = os.stat(self.root + rel).st_ino
        except OSError:
            return
        self._map[ino] = container
        self._paths[ino] = rel

    def procs(self, cgroup_id: int, limit: int = 256) -> list[int] | None:
        """Pids in that cgroup (its cgroup.procs), None when unknown or more than `limit`."""
        rel = self._paths.get(cgroup_id)
        if rel is None:
            return None
        try:
            with open(f"{self.root}{rel}/cgroup.procs", "rb") as f:
                data = f.read(16 * (limit + 1))
        except OSError:
            return None
        pids = data.split()
        if len(pids) > limit:
            return None
        return [int(p) for p in pids]

    def rebuild(self, force: bool = False) -> bool:
        """Walk the tree again, unless the last walk was too recent (ten times its cost)."""
        now = time.monotonic()
        if not force and now < self._next:
            return False
        with self._lock:
            if not force and now < self._next:
                return False
            new: dict[int, Container | None] = {}
            paths: dict[int, str] = {}
            stack = [(self.root, "")]
            while stack and len(new) < self.max_dirs:
                path, rel = stack.pop()
                try:
                    st = os.stat(path)
                    entries = list(os.scandir(path))
                except OSError:
                    continue
                new[st.st_ino] = parse_path(rel) if rel else None
                paths[st.st_ino] = rel
                for e in entries:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append((e.path, f"{rel}/{e.name}"))
                    except OSError:
                        continue
            self._map, self._paths = new, paths
            self.walks += 1
            end = time.monotonic()
            self._next = end + max(self.min_interval, 9 * (end - now))
            return True


_MISSING = object()


# ---- naming a network namespace after its container ------------------------------------
OWNER_PIDS = 8   # processes whose cgroup is read to find a namespace's container
# namespace -> (owning container id, the pid it was read from), once found
_owners: dict[tuple[int, int], tuple[str, int]] = {}


def _start_time(pid: int, proc: str = "/proc") -> int:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 1 << 62


def namespace_owner(key: tuple[int, int], pids: list[int], proc: str = "/proc") -> str:
    """Id of the container that owns the namespace: the container of its oldest process.

    Containers that join another's namespace (a pod, `--network container:X`) start
    after its owner. Only the OWNER_PIDS lowest pids are read; a namespace found to have
    no container is looked at again at the next discovery (it may be starting). The
    answer is kept while the process it came from is still in the namespace (an inode
    can be reused by a new namespace).
    """
    if len(_owners) > 65536:   # namespaces come and go: never let the memo grow without end
        _owners.clear()
    known = _owners.get(key)
    if known is not None and known[1] in pids:
        return known[0]
    best = None
    for pid in sorted(pids)[:OWNER_PIDS]:
        c, _ = read_proc_cgroup(pid, proc)
        if c is not None:
            t = _start_time(pid, proc)
            if best is None or t < best[0]:
                best = (t, c.id, pid)
    if best is None:
        _owners.pop(key, None)
        return ""
    _owners[key] = (best[1], best[2])
    return best[1]
