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
from typing import Callable

# (namespace key, its pids, procfs root) -> id of the container owning it, "" if none
Owner = Callable[[tuple[int, int], list[int], str], str]

NETNS_DIRS = ("/run/netns", "/run/docker/netns")
HOST_NAME = "default"


class NetnsRef:
    """One namespace as discovered. `path` is what to open to enter it."""

    def __init__(self, name: str, path: str, inode: int, dev: int, source: str,
                 pids: list[int] | None = None, aliases: list[str] | None = None,
                 mounts: list[tuple[str, str]] | None = None) -> None:
        self.name = name
        self.path = path
        self.inode = inode
        self.dev = dev
        self.source = source                    # "netns", "docker", "proc", "self"
        self.pids = pids if pids is not None else []
        self.aliases = aliases if aliases is not None else []    # other names of the same namespace
        self.mounts = mounts if mounts is not None else []       # every (source, path) bind mount of it

    def __repr__(self) -> str:
        return f"NetnsRef({self.name!r}, {self.path!r}, inode={self.inode}, source={self.source!r})"

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


def discover(include_proc: bool = True, dirs=NETNS_DIRS, proc: str = "/proc",
             owner: Owner | None = None) -> dict[tuple[int, int], NetnsRef]:
    """Every namespace reachable from `dirs` and, with include_proc, from the pids under `proc`.

    `proc` is the procfs mount to read (a fixture tree in tests). `owner` names a
    namespace after the container that owns it (xtcp2.identity.cgroup.namespace_owner,
    handed in by the daemon: this layer knows no container runtimes).
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
    for key, ref in found.items():
        if owner is not None and ref.source in ("docker", "proc"):
            cid = owner(key, ref.pids, proc)
            if cid and cid != ref.name:
                ref.aliases.append(ref.name)
                ref.name = cid
    return found


def select(found: dict[tuple[int, int], NetnsRef], names: list[str]) -> dict[tuple[int, int], NetnsRef]:
    """Restrict to --netns NAME values ("default" or "self" = the daemon's own namespace)."""
    if not names:
        return found
    wanted = set(names)
    return {k: r for k, r in found.items() if wanted.intersection([r.name, *r.aliases])}
