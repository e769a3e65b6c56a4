"""Run as root: make COUNT network namespaces PREFIX-1..PREFIX-COUNT, each with loopback up,
a listener and PAIRS established connections on it; print "ready N" (sockets made),
hold them until stdin closes, then delete the namespaces.

    python many_namespaces.py PREFIX COUNT PAIRS
"""
import ctypes
import fcntl
import os
import socket
import struct
import subprocess
import sys

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
_libc = ctypes.CDLL(None, use_errno=True)


def setns(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def loopback_up() -> None:
    with socket.socket() as s:
        flags = struct.unpack("16sh", fcntl.ioctl(s, SIOCGIFFLAGS, struct.pack("16sh", b"lo", 0)))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh", b"lo", flags | IFF_UP))


def main() -> None:
    prefix, count, pairs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    names = [f"{prefix}-{i}" for i in range(1, count + 1)]
    home = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    keep = []
    try:
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns add {n}\n" for n in names),
                       text=True, check=True, capture_output=True)
        for name in names:
            setns(f"/run/netns/{name}")
            loopback_up()
            ls = socket.socket()
            ls.bind(("127.0.0.1", 4000))
            ls.listen(pairs + 1)
            keep.append(ls)
            for _ in range(pairs):
                c = socket.create_connection(("127.0.0.1", 4000))
                a, _ = ls.accept()
                keep += [c, a]
        setns(f"/proc/self/fd/{home}")
        print("ready", len(keep), flush=True)
        sys.stdin.read()
    finally:
        for s in keep:
            s.close()
        subprocess.run(["ip", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names),
                       text=True, capture_output=True)


if __name__ == "__main__":
    main()
