"""HTTP endpoint serving the Prometheus text format on config.prom_listen + config.prom_path,
and the daemon's /healthz and /readyz (xtcp2/api/health.py).

prometheus_client's own start_http_server answers on every path; this one answers
only on prom_path (404 elsewhere, so a typo in a scrape config is visible) and reports
a bind failure as a one-line error.

It is also bounded: any local user can connect, and a thread per connection let 3,000
idle connections stall collection. One selector thread (niced) serves at most
MAX_CONNECTIONS connections, each with a deadline for its request and its response;
whatever a client does beyond that is closed and counted in
xtcp2_metrics_connections_closed_total{reason}.
"""
from __future__ import annotations

import importlib
import logging
import os
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from prometheus_client import REGISTRY, Counter, make_wsgi_app

from ..config import Config
from ..errors import ConfigError, Xtcp2Error
from .process_metrics import register_process_metrics
from .upstream_metrics import register_upstream_metrics

log = logging.getLogger(__name__)

# Modules that define metrics at import. Importing them up front makes every series
# exist (at zero) from the first scrape in every mode, so dashboards and alerts never
# see a metric appear late or not at all.
METRIC_MODULES = (
    "xtcp2.metrics", "xtcp2.api.record_fanout", "xtcp2.api.config_service", "xtcp2.api.flat_record_service",
    "xtcp2.netlink.destroy", "xtcp2.modes.bpf_metrics", "xtcp2.tcp_metrics",
)


def import_metric_modules() -> list[str]:
    """Import METRIC_MODULES; returns those that could not be imported (optional parts)."""
    missing = []
    for name in METRIC_MODULES:
        try:
            importlib.import_module(name)
        except Exception as e:  # an optional part (e.g. bpf) may be absent from a build
            log.debug("metrics: %s not available: %s", name, e)
            missing.append(name)
    return missing


def parse_listen(value: str) -> tuple[str, int]:
    """'127.0.0.1:9088', '[::1]:9088', ':9088' (all interfaces, as Go's net.Listen) -> (host, port)."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not 0 <= int(port_s) < 65536:
        raise ConfigError("prom_listen", f"expected HOST:PORT, got {value!r}")
    host = host.strip("[]")
    return (host or "0.0.0.0"), int(port_s)


# Bounds of the listener. It runs as root next to the collector and any local user can
# connect to it, so nothing a client does may cost more than one small slot.
MAX_CONNECTIONS = 64        # open at once; Prometheus needs one per scrape
REQUEST_TIMEOUT = 5.0       # from accept to a complete request head (slow senders too)
WRITE_TIMEOUT = 10.0        # to take the whole response
MAX_REQUEST_BYTES = 8192    # request line + headers
# Accepts per wakeup: a flood cannot monopolise the loop, and (with requests read before
# new accepts) a connection survives several wakeups before a flood can evict it.
ACCEPT_BATCH = 16

CONNECTIONS_CLOSED = Counter(
    "xtcp2_metrics_connections_closed_total",
    "Metrics HTTP connections closed without a response: over the connection limit, no complete "
    "request within the timeout (or response not taken), or a malformed request",
    ["reason"])
for _reason in ("limit", "timeout", "bad_request"):
    CONNECTIONS_CLOSED.labels(_reason)


class _Conn:
    __slots__ = ("sock", "inbuf", "out", "deadline", "writing")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.inbuf = bytearray()
        self.out: memoryview | None = None
        self.deadline = deadline
        self.writing = False


class _SelectorServer:
    """A single-threaded HTTP/1.x server: one request per connection, then close.

    One thread and at most MAX_CONNECTIONS sockets whatever clients do. When the limit is
    reached, the connection that has waited longest without sending a request is closed to
    make room, so idle connections cannot lock a scraper out.
    """

    def __init__(self, sock: socket.socket, app: Callable, host: str) -> None:
        self._listener = sock
        self._app = app
        self._host = host
        self._conns: dict[int, _Conn] = {}  # insertion order = accept order
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._stopping = False
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def serve_forever(self) -> None:
        try:
            # collection comes first when the host is busy: this thread only serves scrapes
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except OSError:
            pass
        while not self._stopping:
            now = time.monotonic()
            timeout = min((c.deadline for c in self._conns.values()), default=now + 1.0) - now
            accept = False
            for key, mask in self._sel.select(max(0.0, min(timeout, 1.0))):
                if key.fileobj is self._listener:
                    accept = True  # after the requests that are ready: new connections may evict
                elif key.fileobj is self._wake_r:
                    continue
                else:
                    conn = self._conns.get(key.fd)
                    if conn is not None:
                        try:
                            self._on_ready(conn, mask)
                        except Exception as e:  # noqa: BLE001 - one bad connection must not end the listener
                            log.warning("metrics: dropping a connection: %s", e)
                            self._close(conn)
            if accept:
                self._accept()
            self._expire(time.monotonic())
        for conn in list(self._conns.values()):
            self._close(conn)

    def shutdown(self) -> None:
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def server_close(self) -> None:
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    # ---- connections -----------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # EMFILE and the like: log, keep serving the others
                log.warning("metrics: accept failed: %s", e.strerror or e)
                return
            sock.setblocking(False)
            if len(self._conns) >= MAX_CONNECTIONS and not self._evict_one():
                CONNECTIONS_CLOSED.labels("limit").inc()
                sock.close()
                continue
            conn = _Conn(sock, time.monotonic() + REQUEST_TIMEOUT)
            self._conns[sock.fileno()] = conn
            self._sel.register(sock, selectors.EVENT_READ, None)

    def _evict_one(self) -> bool:
        for conn in self._conns.values():  # oldest first
            if not conn.writing:
                CONNECTIONS_CLOSED.labels("limit").inc()
                self._close(conn)
                return True
        return False

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            CONNECTIONS_CLOSED.labels("timeout").inc()
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        self._conns.pop(conn.sock.fileno(), None)
        try:
            self._sel.unregister(conn.sock)
        except (KeyError, ValueError):
            pass
        conn.sock.close()

    def _on_ready(self, conn: _Conn, mask: int) -> None:
        try:
            if conn.writing:
                self._write(conn)
                return
            data = conn.sock.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        if not data:
            self._close(conn)
            return
        conn.inbuf += data
        end = conn.inbuf.find(b"\r\n\r\n")
        if end < 0:
            if len(conn.inbuf) > MAX_REQUEST_BYTES:
                CONNECTIONS_CLOSED.labels("bad_request").inc()
                self._close(conn)
            return
        response = self._respond(bytes(conn.inbuf[:end]))
        if response is None:
            CONNECTIONS_CLOSED.labels("bad_request").inc()
            self._close(conn)
            return
        conn.inbuf = bytearray()
        conn.out = memoryview(response)
        conn.writing = True
        conn.deadline = time.monotonic() + WRITE_TIMEOUT
        self._sel.modify(conn.sock, selectors.EVENT_WRITE, None)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            n = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[n:]
        if not len(conn.out):
            self._close(conn)

    def _respond(self, head: bytes) -> bytes | None:
        """The full HTTP response to one request head, or None if it is not HTTP."""
        lines = head.split(b"\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            return None
        try:
            method, target = parts[0].decode("ascii"), parts[1].decode("ascii")
        except UnicodeDecodeError:
            return None
        path, _, query = target.partition("?")
        # HEAD is answered as GET without the body (prometheus_client itself refuses it)
        environ = {"REQUEST_METHOD": "GET" if method == "HEAD" else method, "PATH_INFO": unquote(path), "QUERY_STRING": query,
                   "SERVER_NAME": self._host, "SERVER_PORT": str(self.port), "SERVER_PROTOCOL": "HTTP/1.1",
                   "wsgi.url_scheme": "http"}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            key = "HTTP_" + name.strip().decode("latin-1").upper().replace("-", "_")
            environ[key] = value.strip().decode("latin-1")
        status_headers: list = []

        def start_response(status, headers, exc_info=None):
            status_headers[:] = [status, headers]

        try:
            body = b"".join(self._app(environ, start_response))
        except Exception as e:  # noqa: BLE001 - a collector bug must not stop the listener
            log.warning("metrics: exposition failed: %s", e)
            status_headers[:] = ["500 Internal Server Error", [("Content-Type", "text/plain")]]
            body = b"exposition failed\n"
        status, headers = status_headers
        out = [f"HTTP/1.1 {status}\r\n"]
        out += [f"{k}: {v}\r\n" for k, v in headers if k.lower() not in ("content-length", "connection")]
        out.append(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
        return "".join(out).encode("latin-1") + (body if method != "HEAD" else b"")


@dataclass
class MetricsServer:
    host: str
    port: int
    path: str
    _httpd: _SelectorServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._thread.join(timeout=5)
        self._httpd.server_close()


def _listen(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


def start_metrics_server(config: Config, registry=REGISTRY, health=None) -> MetricsServer:
    """Serve metrics until .stop(). Port 0 picks a free port (see .port). With `health`
    (xtcp2.api.health.Health) /healthz and /readyz answer too."""
    host, port = parse_listen(config.prom_listen)
    path = config.prom_path if config.prom_path.startswith("/") else "/" + config.prom_path
    register_process_metrics(registry)
    import_metric_modules()
    register_upstream_metrics(registry)
    app = make_wsgi_app(registry)

    def routed(environ, start_response):
        if health is not None and environ.get("PATH_INFO", "") in ("/healthz", "/readyz"):
            return health.wsgi(environ["PATH_INFO"], start_response)
        if environ.get("PATH_INFO", "") != path:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"metrics are at {path}\n".encode()]
        return app(environ, start_response)

    try:
        sock = _listen(host, port)
    except OSError as e:
        raise Xtcp2Error(f"metrics: cannot listen on {config.prom_listen}: {e.strerror or e}") from None
    httpd = _SelectorServer(sock, routed, host)
    thread = threading.Thread(target=httpd.serve_forever, name="xtcp2-metrics", daemon=True)
    thread.start()
    handle = MetricsServer(host, httpd.port, path, httpd, thread)
    log.info("Prometheus metrics at %s", handle.url)
    return handle
