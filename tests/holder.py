"""A namespace holding N loopback connections that do not change, for tests that need
steady records (every poll the same sockets)."""
from __future__ import annotations

import contextlib
import subprocess
import sys
import uuid
from typing import Iterator

# run inside the namespace: N connections on 127.0.0.1:5000, held until stdin closes
HOLDER = r"""
import socket, subprocess, sys, time
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
n = int(sys.argv[1])
lst = socket.socket()
lst.bind(("127.0.0.1", 5000))
lst.listen(4096)
keep = []
for _ in range(n):
    c = socket.create_connection(("127.0.0.1", 5000))
    s, _ = lst.accept()
    keep += [c, s]
print("ready", flush=True)
sys.stdin.read()  # hold the sockets until the test closes our stdin
"""


@contextlib.contextmanager
def netns_holding(prefix: str, connections: int) -> Iterator[str]:
    """A new namespace named prefix-<random> with `connections` held connections; its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    holder = None
    try:
        holder = subprocess.Popen(["ip", "netns", "exec", name, sys.executable, "-c", HOLDER, str(connections)],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert holder.stdout.readline().strip() == "ready"
        yield name
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        subprocess.run(["ip", "netns", "del", name], check=False)
