"""ns: list every network namespace the collector would see, with identity and TCP socket counts.

    ns            # table
    ns --json     # one JSON document

Sources, as the daemon's discovery: named namespaces (/run/netns), docker's
(/run/docker/netns), every process's /proc/PID/ns/net, and our own. Namespaces are
grouped by (device, inode); each is entered from a worker thread (setns) to read its
SO_NETNS_COOKIE and dump its TCP sockets over sock_diag. nsid is the id the *current*
namespace assigned to it (RTM_GETNSID), -1 if none.
"""
from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import sys
import threading
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence, TypeVar

from ..netlink import constants as nlc
from ..netlink.diag import DiagSocket, DumpAborted, NetlinkError, new_chunk
from .tcp_server import GoFlagParser

CLONE_NEWNET = 0x40000000
NAMED_DIRS = (("netns", "/run/netns"), ("docker", "/run/docker/netns"))
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


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

    @property
    def key(self) -> tuple[int, int]:
        return (self.dev, self.inode)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns: {os.strerror(err)}")


def run_in_netns(path: str, fn: Callable[[], T]) -> T:
    """Run fn in a fresh thread that has joined the namespace at `path`.

    setns only moves the calling thread, so the rest of the process stays where it is;
    sockets fn creates stay bound to the namespace after the thread leaves.
    """
    result: list = []

    def worker() -> None:
        try:
            target = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            result.append(e)
            return
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _setns(target)
            try:
                result.append(("ok", fn()))
            finally:
                _setns(home)
        except BaseException as e:  # noqa: BLE001 - handed to the caller's thread
            result.append(e)
        finally:
            os.close(target)
            os.close(home)

    t = threading.Thread(target=worker, name="ns-enter", daemon=True)
    t.start()
    t.join()
    out = result[0]
    if isinstance(out, BaseException):
        raise out
    return out[1]


def discover() -> list[Namespace]:
    """Every namespace reachable through named mounts, /proc or ourselves, grouped by inode."""
    found: dict[tuple[int, int], Namespace] = {}

    def get(st: os.stat_result) -> Namespace:
        key = (st.st_dev, st.st_ino)
        if key not in found:
            found[key] = Namespace(dev=st.st_dev, inode=st.st_ino)
        return found[key]

    for source, directory in NAMED_DIRS:
        try:
            entries = sorted(os.listdir(directory))
        except OSError:
            continue
        for name in entries:
            path = os.path.join(directory, name)
            try:
                st = os.stat(path)
            except OSError:
                continue
            # An unmounted placeholder file is not a namespace (inode of the tmpfs file).
            if not _is_netns(path):
                continue
            get(st).names.append({"source": source, "path": path})
    own = os.stat("/proc/self/ns/net")
    get(own).own = True
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            st = os.stat(f"/proc/{entry}/ns/net")
        except OSError:
            continue  # process gone or kernel thread without access
        get(st).pids.append(int(entry))
    out = sorted(found.values(), key=lambda n: (not n.own, n.inode))
    for ns in out:
        ns.pids.sort()
    return out


def _is_netns(path: str) -> bool:
    """True if path is a network namespace (NS_GET_NSTYPE would need an ioctl; comparing the
    magic of the filesystem is enough: nsfs files live on the nsfs superblock)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # NS_GET_NSTYPE = _IO(0xb7, 0x3)
        import fcntl
        return fcntl.ioctl(fd, 0xB703) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


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


_RTM_GETNSID = 90
_RTM_NEWNSID = 88
_NETNSA_NSID = 1
_NETNSA_FD = 3


def get_nsid(path: str) -> int:
    """The nsid our namespace assigned to the namespace at path, -1 if none."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, 0)  # NETLINK_ROUTE
    try:
        s.settimeout(2)
        body = struct.pack("=B3x", socket.AF_UNSPEC) + struct.pack("=HHI", 8, _NETNSA_FD, fd)
        s.send(struct.pack("=IHHII", 16 + len(body), _RTM_GETNSID, 0x01, 1, 0) + body)
        reply = s.recv(4096)
    finally:
        s.close()
        os.close(fd)
    ln, kind = struct.unpack_from("=IH", reply)
    if kind == 2:  # NLMSG_ERROR
        err = -struct.unpack_from("=i", reply, 16)[0]
        raise OSError(err, f"RTM_GETNSID: {os.strerror(err)}")
    if kind != _RTM_NEWNSID:
        raise OSError(errno.EPROTO, f"RTM_GETNSID: unexpected reply type {kind}")
    off = 16 + 4
    while off + 4 <= ln:
        alen, atype = struct.unpack_from("=HH", reply, off)
        if alen < 4:
            break
        if atype == _NETNSA_NSID:
            return struct.unpack_from("=i", reply, off + 4)[0]
        off += (alen + 3) & ~3
    return -1


def inspect(ns: Namespace) -> Namespace:
    path = ns_path(ns)
    if path is None:
        ns.error = "no path to enter (processes exited)"
        return ns
    try:
        ns.cookie, ns.sockets = run_in_netns(path, _count_sockets)
        ns.total_sockets = sum(sum(v.values()) for v in ns.sockets.values())
    except (OSError, DumpAborted, NetlinkError) as e:
        ns.error = f"cannot inspect via {path}: {e}"
    try:
        ns.nsid = get_nsid(path)
    except OSError as e:
        ns.error = ns.error or f"nsid: {e}"
    return ns


def collect() -> list[Namespace]:
    return [inspect(ns) for ns in discover()]


def to_json(namespaces: list[Namespace]) -> str:
    return json.dumps({"namespaces": [asdict(n) for n in namespaces], "count": len(namespaces)}, indent=2)


def _pids_text(pids: list[int]) -> str:
    if len(pids) <= 3:
        return ",".join(map(str, pids)) or "-"
    return f"{pids[0]},{pids[1]},... ({len(pids)})"


def to_table(namespaces: list[Namespace]) -> str:
    rows = [("INODE", "COOKIE", "NSID", "NAME", "PIDS", "TCP4", "TCP6", "STATES")]
    for n in namespaces:
        name = ",".join(f"{x['source']}:{os.path.basename(x['path'])}" for x in n.names)
        if n.own:
            name = ("self," + name) if name else "self"
        states: dict[str, int] = {}
        for per in n.sockets.values():
            for k, v in per.items():
                states[k] = states.get(k, 0) + v
        rows.append((
            str(n.inode), "-" if n.cookie is None else str(n.cookie),
            "-" if n.nsid is None else str(n.nsid), name or "-", _pids_text(n.pids),
            str(sum(n.sockets.get("inet", {}).values())), str(sum(n.sockets.get("inet6", {}).values())),
            " ".join(f"{k}={v}" for k, v in sorted(states.items())) or ("error: " + n.error if n.error else "-"),
        ))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)


def build_parser() -> GoFlagParser:
    p = GoFlagParser("ns", __doc__.split("\n\n")[0])
    p.flag("json", action="store_true", help="print JSON instead of a table")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        namespaces = collect()
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
