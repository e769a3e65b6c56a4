"""ns: list every network namespace the collector would see, with identity and TCP socket counts.

    ns            # table
    ns --json     # one JSON document

Sources, as the daemon's discovery: named namespaces (/run/netns), docker's
(/run/docker/netns), every process's /proc/PID/ns/net, and our own. Namespaces are
grouped by (device, inode); each is entered from a worker thread (setns) to read its
SO_NETNS_COOKIE and dump its TCP sockets over sock_diag. nsid is the id the *current*
namespace assigned to it (RTM_GETNSID), -1 if none. NAME is the name records carry
("default", a /run/netns name, the owning container's id, "netns:[INODE]"); CONTAINERS
are the containers of its processes (from /proc/PID/cgroup), named from the Docker Engine
API when -dockerSocket answers; PROCESSES their distinct comm names.
"""
from __future__ import annotations

import json
import os
import socket
import sys
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, TypeVar

from ..netlink import constants as nlc
from ..netns.discover import NETNS_DIRS
from ..netns.discover import discover as daemon_discover
from ..netns.enter import NetnsEnterer
from ..netns.nsid import get_nsid
from ..argparse_go import GoFlagParser

# xtcp2.netlink.diag (and numpy behind it) is imported when a namespace is inspected,
# not at module load: `ns -help` stays cheap, which matters in a TCG guest.

NAMED_DIRS = tuple(("docker" if "docker" in d else "netns", d) for d in NETNS_DIRS)
T = TypeVar("T")


@dataclass
class Namespace:
    dev: int
    inode: int
    names: list[dict] = field(default_factory=list)   # {"source": "netns"|"docker", "path": ...}
    pids: list[int] = field(default_factory=list)
    own: bool = False
    cookie: int | None = None
    nsid: int | None = None
    sockets: dict = field(default_factory=dict)       # {"inet": {"LISTEN": 3, ...}, "inet6": {...}}
    total_sockets: int = 0
    error: str = ""
    path: str = ""                                     # what was opened to enter it
    name: str = ""                                     # the netns name records carry
    containers: list[dict] = field(default_factory=list)  # {"id", "runtime", "name", "image"}
    processes: list[str] = field(default_factory=list)    # distinct comm of its processes

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.inode)


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """fn() run on the daemon's namespace-entering worker thread, inside the namespace at path."""
    enterer = NetnsEnterer()
    try:
        return enterer.run_in(path, fn)
    finally:
        enterer.close()


def discover() -> list[Namespace]:
    """The daemon's discovery (named mounts, docker's, /proc, self), as inspector rows."""
    out = []
    own = os.stat("/proc/self/ns/net")
    from ..identity.cgroup import namespace_owner
    for ref in daemon_discover(include_proc=True, dirs=tuple(d for _, d in NAMED_DIRS),
                               owner=namespace_owner).values():
        ns = Namespace(dev=ref.dev, inode=ref.inode, pids=sorted(set(ref.pids)), path=ref.path,
                       names=[{"source": src, "path": p} for src, p in ref.mounts], name=ref.name)
        # the daemon names a namespace once; the inspector shows every path to it
        ns.own = ns.key == (own.st_dev, own.st_ino)
        if ns.own and not ns.names:
            ns.path = "/proc/self/ns/net"
        out.append(ns)
    for ns in out:
        ns.pids = sorted(set(ns.pids))
    return sorted(out, key=lambda n: (not n.own, n.inode))


def ns_path(ns: Namespace) -> str | None:
    if ns.names:
        return ns.names[0]["path"]
    if ns.own:
        return "/proc/self/ns/net"
    for pid in ns.pids:
        p = f"/proc/{pid}/ns/net"
        if os.path.exists(p):
            return p
    return None


def _count_sockets() -> tuple[int, dict]:
    """(cookie, {family: {state: n}}) for the namespace of the calling thread."""
    from ..netlink.diag import DiagSocket, new_chunk
    diag = DiagSocket.open(timeout_ms=2000)
    try:
        cookie = diag.netns_cookie()
        counts: dict[str, dict[str, int]] = {}
        chunk = new_chunk(1 << 20)
        for family, fname in ((socket.AF_INET, "inet"), (socket.AF_INET6, "inet6")):
            per_state: dict[str, int] = {}
            chunk.reset()
            for ch in diag.dump(family, 0, chunk):
                buf = ch.buf
                for off in ch.offsets:
                    state = nlc.TCP_STATES.get(buf[off + 17], str(buf[off + 17]))
                    per_state[state] = per_state.get(state, 0) + 1
            counts[fname] = dict(sorted(per_state.items()))
        return cookie, counts
    finally:
        diag.close()


def inspect(ns: Namespace) -> Namespace:
    from ..netlink.diag import DumpAborted, NetlinkError
    path = ns_path(ns)
    if path is None:
        ns.error = "no path to enter (processes exited)"
        return ns
    try:
        ns.cookie, ns.sockets = run_in_netns(path, _count_sockets)
        ns.total_sockets = sum(sum(v.values()) for v in ns.sockets.values())
    except (OSError, DumpAborted, NetlinkError) as e:
        ns.error = f"cannot inspect via {path}: {e}"
    ns.nsid = get_nsid(path)
    return ns


def identify(namespaces: list[Namespace], docker_socket: str = "") -> str:
    """Fill containers and processes of each namespace; returns a docker error ("" if none)."""
    from ..identity.docker import DockerError, DockerMetadata
    from ..identity.proc import read_process
    known, error = {}, ""
    if docker_socket:
        try:
            known = DockerMetadata(docker_socket, timeout=2.0).refresh()
        except (OSError, DockerError, ValueError) as e:
            error = f"docker API at {docker_socket}: {e}"
    for ns in namespaces:
        comms, conts = [], {}
        for pid in ns.pids:
            p = read_process(pid)
            if p is None:
                continue
            if p.comm not in comms:
                comms.append(p.comm)
            if p.container is not None and p.container.id not in conts:
                info = known.get(p.container.id)
                conts[p.container.id] = {"id": p.container.id, "runtime": info.runtime if info else p.container.runtime,
                                         "name": info.name if info else "", "image": info.image if info else ""}
        ns.processes, ns.containers = comms, list(conts.values())
    return error


def collect(docker_socket: str = "") -> list[Namespace]:
    namespaces = [inspect(ns) for ns in discover()]
    error = identify(namespaces, docker_socket)
    if error:
        print(f"ns: {error}; containers shown by id", file=sys.stderr)
    return namespaces


def to_json(namespaces: list[Namespace]) -> str:
    return json.dumps({"namespaces": [asdict(n) for n in namespaces], "count": len(namespaces)}, indent=2)


def _pids_text(pids: list[int]) -> str:
    if len(pids) <= 3:
        return ",".join(map(str, pids)) or "-"
    return f"{pids[0]},{pids[1]},... ({len(pids)})"


def to_table(namespaces: list[Namespace]) -> str:
    rows = [("INODE", "COOKIE", "NSID", "NAME", "MOUNTS", "CONTAINERS", "PROCESSES", "PIDS", "TCP4", "TCP6",
             "STATES")]
    for n in namespaces:
        mounts = ",".join(f"{x['source']}:{os.path.basename(x['path'])}" for x in n.names)
        conts = ",".join(f"{c['name'] or c['id'][:12]}({c['image'] or c['runtime']})" for c in n.containers)
        procs = ",".join(n.processes[:4]) + (f",... ({len(n.processes)})" if len(n.processes) > 4 else "")
        states: dict[str, int] = {}
        for per in n.sockets.values():
            for k, v in per.items():
                states[k] = states.get(k, 0) + v
        rows.append((
            str(n.inode), "-" if n.cookie is None else str(n.cookie),
            "-" if n.nsid is None else str(n.nsid), (n.name[:12] if len(n.name) == 64 else n.name) or "-",
            mounts or "-", conts or "-", procs or "-", _pids_text(n.pids),
            str(sum(n.sockets.get("inet", {}).values())), str(sum(n.sockets.get("inet6", {}).values())),
            " ".join(f"{k}={v}" for k, v in sorted(states.items())) or ("error: " + n.error if n.error else "-"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def build_parser() -> GoFlagParser:
    p = GoFlagParser("ns", __doc__.split("\n\n")[0])
    p.flag("json", action="store_true", help="print JSON instead of a table")
    p.flag("dockerSocket", default="/run/docker.sock",
           help="Docker Engine API socket used to name containers ('' = do not ask)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        namespaces = collect(args.dockerSocket)
    except OSError as e:
        print(f"ns: error: {e}", file=sys.stderr)
        return 1
    print(to_json(namespaces) if args.json else to_table(namespaces))
    if all(n.error for n in namespaces):
        print("ns: error: no namespace could be inspected (needs root / CAP_SYS_ADMIN)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
