"""The nsid the daemon's own namespace has assigned to another one (RTM_GETNSID)."""
from __future__ import annotations

import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWNSID, RTM_GETNSID = 88, 90
NETNSA_NSID, NETNSA_FD = 1, 3
_HDR = struct.Struct("=IHHII")


def get_nsid(ns_path: str) -> int:
    """nsid of the namespace at ns_path, or -1 when none is assigned / it can't be read."""
    try:
        fd = os.open(ns_path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1
    try:
        attr = struct.pack("=HHI", 8, NETNSA_FD, fd)
        body = struct.pack("=B3x", socket.AF_UNSPEC) + attr
        msg = _HDR.pack(_HDR.size + len(body), RTM_GETNSID, 0x01, 1, 0) + body
        with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE) as s:
            s.settimeout(1.0)
            s.send(msg)
            data = s.recv(4096)
    except OSError:
        return -1
    finally:
        os.close(fd)
    ln, typ = struct.unpack_from("=IH", data)
    if typ != RTM_NEWNSID:  # an NLMSG_ERROR: no such namespace / not permitted
        return -1
    off = _HDR.size + 4
    while off + 4 <= min(ln, len(data)):
        alen, atype = struct.unpack_from("=HH", data, off)
        if alen < 4:
            break
        if atype == NETNSA_NSID and alen >= 8:
            return struct.unpack_from("=i", data, off + 4)[0]
        off += (alen + 3) & ~3
    return -1
