"""A TLS-terminating TCP proxy for tests: real TLS (Python's OpenSSL) on one loopback
port, plaintext to a real server behind it. Used where the server cannot do TLS itself
(Tansu 0.6: `--cert` and `--key` are mutually exclusive on its command line and a
`tls://` listener with `--cert` alone drops every handshake). It is a transport, not a
double: the bytes after the handshake are the real server's."""
from __future__ import annotations

import select
import socket
import ssl
import subprocess
import threading
from pathlib import Path


def make_ca_and_cert(d: Path) -> dict[str, str]:
    """A CA, a server certificate for 127.0.0.1 signed by it, and a client certificate."""
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=outputs-test-ca")
    for name, san in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN=outputs-{name}")
        ext = d / f"{name}.ext"
        ext.write_text((san + "\n") if san else "basicConstraints=CA:FALSE\n")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", ext.name)
    return {k: str(d / v) for k, v in (("ca", "ca.pem"), ("cert", "server.pem"), ("key", "server.key"),
                                         ("client_cert", "client.pem"), ("client_key", "client.key"))}


class TLSProxy:
    def __init__(self, port: int, backend_port: int, files: dict[str, str], require_client_cert: bool = False) -> None:
        self.port, self.backend_port = port, backend_port
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(files["cert"], files["key"])
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(files["ca"])
        self.ctx = ctx
        self.handshakes = 0
        self.failed_handshakes = 0
        self.sock: socket.socket | None = None
        self.conns: list[socket.socket] = []

    def start(self) -> "TLSProxy":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(16)
        self.sock = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()
        return self

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                raw, _ = sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            self.failed_handshakes += 1
            raw.close()
            return
        self.handshakes += 1
        try:
            back = socket.create_connection(("127.0.0.1", self.backend_port))
        except OSError:
            tls.close()
            return
        self.conns += [tls, back]
        # one thread per connection and select(): an SSL object must not be read and
        # written from two threads at once
        try:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, back], [], [], 1.0)[0]
                if tls in ready:
                    data = tls.recv(65536)
                    if not data:
                        break
                    back.sendall(data)
                if back in ready:
                    data = back.recv(65536)
                    if not data:
                        break
                    tls.sendall(data)
        except (OSError, ValueError):
            pass
        for x in (tls, back):
            try:
                x.close()
            except OSError:
                pass

    def close(self) -> None:
        if self.sock:
            self.sock.close()
            self.sock = None
        for c in self.conns:
            try:
                c.close()
            except OSError:
                pass
