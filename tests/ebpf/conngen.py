"""Short-connection generator for the bpf-mode tests (run inside a namespace).

P server processes share one listening socket on 127.0.0.1; P client processes each
make count/P sequential connections: send S bytes, half-close, read the reply until
EOF, close. S and the reply size vary per connection so totals are not guessable.
Prints one JSON line per client connection: [client_port, server_port, sent, received].
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import sys


def reply_size(n: int) -> int:
    return (n * 7919) % 1500 + 1


def serve(lsock: socket.socket) -> None:
    while True:
        try:
            c, _ = lsock.accept()
        except OSError:
            return
        with c:
            got = 0
            while True:
                b = c.recv(65536)
                if not b:
                    break
                got += len(b)
            c.sendall(b"r" * reply_size(got))


def client(port: int, count: int, seed: int, out) -> None:
    lines = []
    for i in range(count):
        size = (seed * 131 + i * 977) % 3000 + 1
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"s" * size)
        s.shutdown(socket.SHUT_WR)
        got = 0
        while True:
            b = s.recv(65536)
            if not b:
                break
            got += len(b)
        lines.append(json.dumps([s.getsockname()[1], port, size, got]))
        s.close()
    out.write("\n".join(lines) + ("\n" if lines else ""))
    out.flush()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--hold", action="store_true", help="keep one connection open until stdin closes")
    a = ap.parse_args()
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(4096)
    port = lsock.getsockname()[1]
    servers = []
    for _ in range(a.procs):
        pid = os.fork()
        if pid == 0:
            serve(lsock)
            os._exit(0)
        servers.append(pid)
    if a.hold:
        s = socket.create_connection(("127.0.0.1", port))
        print(json.dumps({"hold": [s.getsockname()[1], port]}), flush=True)
        sys.stdin.read()
        s.close()
    clients = []
    per = [a.count // a.procs + (1 if i < a.count % a.procs else 0) for i in range(a.procs)]
    for i, n in enumerate(per):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            with os.fdopen(w, "w") as out:
                client(port, n, i, out)
            os._exit(0)
        os.close(w)
        clients.append((pid, os.fdopen(r)))
    for pid, f in clients:
        sys.stdout.write(f.read())
        os.waitpid(pid, 0)
    sys.stdout.flush()
    lsock.close()
    for pid in servers:
        os.kill(pid, 15)
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
