"""Find every network namespace on the host: bind mounts, docker's, processes', our own.

Identity is (st_dev, st_ino) of the nsfs file; the same namespace reached through
several paths (a bind mount and the processes inside it) is reported once, under the
name upstream gives it: "default" for the daemon's own (the host's; "self" is kept as
an alias), the bind-mount name under /run/netns, the id of the container that owns it
(the container of its oldest process, from /proc/PID/cgroup), the docker bind-mount
name, else "netns:[<inode>]".
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..identity.cgroup import read_proc_cgroup

NETNS_DIRS = ("/run/netns", "/run/docker/netns")
HOST_NAME = "default"
OWNER_PIDS = 8   # processes whose cgroup is read to find a namespace's container
# namespace -> (owning container id, the pid it was read from), once found
_owners: dict[tuple[int, int], tuple[str, int]] = {}


@dataclass
class NetnsRef:
    """One namespace as discovered. `path` is what to open to enter it."""

    name: str
    path: str
    inode: int
    dev: int
    source: str  # "netns", "docker", "proc", "self"
    pids: list[int] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)  # other names of the same namespace
    mounts: list[tuple[str, str]] = field(default_factory=list)  # every (source, path) bind mount of it

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.inode)


def _stat_ns(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None  # vanished, or not a namespace we may look at
    return st


def _self_pid(proc: str) -> int:
    try:
        return int(os.readlink(os.path.join(proc, "self")))
    except (OSError, ValueError):
        return os.getpid()


def discover(include_proc: bool = True, dirs=NETNS_DIRS, proc: str = "/proc") -> dict[tuple[int, int], NetnsRef]:
    """Every namespace reachable from `dirs` and, with include_proc, from the pids under `proc`.

    `proc` is the procfs mount to read (a fixture tree in tests).
    """
    found: dict[tuple[int, int], NetnsRef] = {}
    self_path = os.path.join(proc, "self", "ns", "net")
    st = _stat_ns(self_path)
    nsfs_dev = st.st_dev if st else None  # every namespace file lives on the one nsfs
    self_pid = _self_pid(proc) if st else None
    if st:
        found[(st.st_dev, st.st_ino)] = NetnsRef(HOST_NAME, self_path, st.st_ino, st.st_dev, "self", [self_pid],
                                                 ["self"])
    for d in dirs:
        source = "docker" if "docker" in d else "netns"
        try:
            names = sorted(os.listdir(d))
        except OSError:
            continue
        for name in names:
            path = os.path.join(d, name)
            st = _stat_ns(path)
            if st is None or st.st_ino == 0 or (nsfs_dev is not None and st.st_dev != nsfs_dev):
                continue  # vanished, or a placeholder file that is not a mounted namespace
            key = (st.st_dev, st.st_ino)
            ref = found.get(key)
            if ref is None or ref.source in ("proc", "self"):
                pids = ref.pids if ref else []
                aliases = [ref.name, *ref.aliases] if ref else []
                mounts = ref.mounts if ref else []
                ref = found[key] = NetnsRef(name, path, st.st_ino, st.st_dev, source, pids, aliases, mounts)
            else:
                ref.aliases.append(name)
            ref.mounts.append((source, path))
    if include_proc:
        for entry in os.scandir(proc):
            name = entry.name
            if not name.isdigit() or int(name) == self_pid:
                continue  # not a process, or ourselves (listed above)
            path = os.path.join(proc, name, "ns", "net")
            st = _stat_ns(path)
            if st is None:
                continue
            key = (st.st_dev, st.st_ino)
            pid = int(name)
            ref = found.get(key)
            if ref is None:
                found[key] = NetnsRef(f"netns:[{st.st_ino}]", path, st.st_ino, st.st_dev, "proc", [pid])
            else:
                ref.pids.append(pid)
    for key in [k for k in _owners if k not in found]:
        del _owners[key]
    for key, ref in found.items():
        if ref.source in ("docker", "proc"):
            cid = container_owner(key, ref.pids, proc)
            if cid and cid != ref.name:
                ref.aliases.append(ref.name)
                ref.name = cid
    return found


def _start_time(pid: int, proc: str = "/proc") -> int:
    try:
        with open(f"{proc}/{pid}/stat", "rb") as f:
            data = f.read()
        return int(data[data.rfind(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return 1 << 62


def container_owner(key: tuple[int, int], pids: list[int], proc: str = "/proc") -> str:
    """Id of the container that owns the namespace: the container of its oldest process.

    Containers that join another's namespace (a pod, `--network container:X`) start
    after its owner. Only the OWNER_PIDS lowest pids are read; a namespace found to have
    no container is looked at again at the next discovery (it may be starting). The
    answer is kept while the process it came from is still in the namespace (an inode
    can be reused by a new namespace).
    """
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


def select(found: dict[tuple[int, int], NetnsRef], names: list[str]) -> dict[tuple[int, int], NetnsRef]:
    """Restrict to --netns NAME values ("default" or "self" = the daemon's own namespace)."""
    if not names:
        return found
    wanted = set(names)
    return {k: r for k, r in found.items() if wanted.intersection([r.name, *r.aliases])}
