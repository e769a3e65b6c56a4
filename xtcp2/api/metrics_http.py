"""HTTP endpoint serving the Prometheus text format on config.prom_listen + config.prom_path,
the daemon's /healthz and /readyz (xtcp2/api/health.py) and /debug/profile
(xtcp2/api/profile.py, loopback clients only).

prometheus_client's own start_http_server answers on every path; this one answers
only on its paths (404 elsewhere, so a typo in a scrape config is visible) and reports
a bind failure as a one-line error.

It is also bounded: any local user can connect, and a thread per connection let 3,000
idle connections stall collection. One selector thread (niced) serves at most
MAX_CONNECTIONS connections, each with a deadline for its request and its response;
whatever a client does beyond that is closed and counted in
xtcp2_metrics_connections_closed_total{reason}.

-webConfigFile (xtcp2/api/web_config.py, the exporter-toolkit format) adds TLS, client
certificates and basic auth. The TLS handshake is non-blocking in the same selector
loop; bcrypt checks and profiles run on worker threads, so neither a silent TLS client
nor a slow password check delays anyone else's scrape.
"""
from __future__ import annotations

import importlib
import ipaddress
import logging
import os
import queue
import selectors
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable
from urllib.parse import unquote

from prometheus_client import REGISTRY, Counter, make_wsgi_app

from ..config import Config
from ..errors import Xtcp2Error
from .health import HEALTH_PATHS, parse_listen
from .process_metrics import register_process_metrics
from .profile import MAX_SECONDS as MAX_PROFILE_SECONDS
from .profile import PROFILES, Profiler, ProfileError
from .profile import parse_query as parse_profile_query
from .upstream_metrics import register_upstream_metrics
from .web_config import BasicAuth, WebConfigSource, client_identity_ok

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


REFUSED = Counter(
    "xtcp2_metrics_refused_total",
    "Metrics listener requests refused: TLS handshake failed, no or wrong basic auth, no client "
    "certificate where one is required, /debug/profile from a non-loopback peer, too many password checks queued",
    ["reason"])
for _reason in ("tls_handshake", "unauthorized", "client_cert", "not_loopback", "auth_busy"):
    REFUSED.labels(_reason)

PROFILE_PATH = "/debug/profile"
SEND_CHUNK = 1 << 16
# bcrypt checks waiting or running at once; beyond, 503 (each costs ~0.1 s of one core)
MAX_AUTH_PENDING = 16
AUTH_TIMEOUT = 10.0

_READ, _WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


class _Conn:
    """One connection: handshake (TLS) -> read (request head) -> wait (work on another
    thread: a password check, a profile) -> write (response) -> closed."""
    __slots__ = ("sock", "fd", "loopback", "web", "inbuf", "out", "deadline", "state", "events")

    def __init__(self, sock: socket.socket, loopback: bool, web, deadline: float, state: str) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.loopback = loopback
        self.web = web      # the WebConfig this connection was accepted under (None: plain, open)
        self.inbuf = bytearray()
        self.out: memoryview | None = None
        self.deadline = deadline
        self.state = state
        self.events = 0


class _Deferred:
    """Work for a worker thread; its result (response bytes, or another _Deferred) is
    handed back to the listener thread. `cancel` undoes what creating it reserved (the
    profiler) when it never runs: its connection went away, or the listener is stopping."""
    __slots__ = ("fn", "timeout", "pool", "cancel")

    def __init__(self, fn: Callable[[], "bytes | _Deferred"], timeout: float, pool: ThreadPoolExecutor,
                 cancel: Callable[[], None] | None = None) -> None:
        self.fn, self.timeout, self.pool, self.cancel = fn, timeout, pool, cancel


def is_loopback_peer(host: str) -> bool:
    try:
        ip = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def _nice_thread() -> None:
    try:
        # collection comes first when the host is busy: these threads only serve scrapes
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except OSError:
        pass


def response(status: str, body: bytes, headers=(), method: str = "GET", extra=()) -> bytes:
    out = [f"HTTP/1.1 {status}\r\n"]
    out += [f"{k}: {v}\r\n" for k, v in (*headers, *extra) if k.lower() not in ("content-length", "connection")]
    out.append(f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return "".join(out).encode("latin-1") + (body if method != "HEAD" else b"")


def _text(status: str, message: str, method: str = "GET", extra=(), web=None) -> bytes:
    headers = [("Content-Type", "text/plain; charset=utf-8"), *extra]
    return response(status, message.encode() + b"\n", headers, method, web.headers if web else ())


class _SelectorServer:
    """A single-threaded HTTP/1.x server (plain or TLS): one request per connection, then close.

    One thread and at most MAX_CONNECTIONS sockets whatever clients do; every socket
    operation is non-blocking, the TLS handshake included, so a client that connects and
    says nothing (or stops half-way through a handshake) holds one slot until its
    deadline and delays nobody. When the limit is reached, the connection that has
    waited longest without sending a request is closed to make room, so idle connections
    cannot lock a scraper out. Slow work (bcrypt checks, profiles) runs on worker threads.
    """

    def __init__(self, sock: socket.socket, app: Callable, host: str, web: WebConfigSource | None = None,
                 profiler: Profiler | None = None) -> None:
        self._listener = sock
        self._app = app
        self._host = host
        self._web = web
        self._profiler = profiler or Profiler()
        self._auth = BasicAuth()
        self._auth_slots = threading.BoundedSemaphore(MAX_AUTH_PENDING)
        self._auth_pool = ThreadPoolExecutor(1, thread_name_prefix="xtcp2-metrics-auth", initializer=_nice_thread)
        self._profile_pool = ThreadPoolExecutor(1, thread_name_prefix="xtcp2-profile")
        self._done: queue.SimpleQueue = queue.SimpleQueue()   # (conn, result) from workers
        self._conns: dict[int, _Conn] = {}  # insertion order = accept order
        self._sel = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = False
        self._sel.register(sock, selectors.EVENT_READ, None)
        self._sel.register(self._wake_r, selectors.EVENT_READ, None)

    @property
    def port(self) -> int:
        return self._listener.getsockname()[1]

    def serve_forever(self) -> None:
        _nice_thread()
        while not self._stopping:
            now = time.monotonic()
            timeout = min((c.deadline for c in self._conns.values()), default=now + 1.0) - now
            accept = False
            for key, mask in self._sel.select(max(0.0, min(timeout, 1.0))):
                if key.fileobj is self._listener:
                    accept = True  # after the requests that are ready: new connections may evict
                elif key.fileobj is self._wake_r:
                    self._drain_wake()
                else:
                    conn = self._conns.get(key.fd)
                    if conn is not None:
                        self._guarded(self._on_ready, conn)
            self._deliver()
            if accept:
                self._accept()
            self._expire(time.monotonic())
        for conn in list(self._conns.values()):
            self._close(conn)

    def shutdown(self) -> None:
        self._stopping = True
        self._profiler.stop()
        for pool in (self._auth_pool, self._profile_pool):
            pool.shutdown(wait=False, cancel_futures=True)
        self._wake()

    def server_close(self) -> None:
        for s in (self._listener, self._wake_r, self._wake_w):
            s.close()
        self._sel.close()

    def _guarded(self, fn, conn: _Conn, *args) -> None:
        try:
            fn(conn, *args)
        except Exception as e:  # noqa: BLE001 - one bad connection must not end the listener
            log.warning("metrics: dropping a connection: %s", e)
            self._close(conn)

    # ---- workers -----------------------------------------------------------------
    def _wake(self) -> None:
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass  # full: a wakeup is already pending

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _defer(self, conn: _Conn, work: _Deferred) -> None:
        """Park the connection (unwatched: a client that goes away is seen when we write)
        and run `work` on its pool."""
        conn.state = "wait"
        conn.deadline = time.monotonic() + work.timeout
        self._watch(conn, 0)

        def run() -> None:
            try:
                result = work.fn()
            except Exception as e:  # noqa: BLE001 - a worker failure is this request's 500
                log.warning("metrics: request failed: %s", e)
                result = _text("500 Internal Server Error", "internal error")
            self._done.put((conn, result))
            self._wake()

        try:
            work.pool.submit(run)
        except RuntimeError:  # shutting down
            if work.cancel is not None:
                work.cancel()
            self._close(conn)

    def _deliver(self) -> None:
        while True:
            try:
                conn, result = self._done.get_nowait()
            except queue.Empty:
                return
            if self._conns.get(conn.fd) is not conn:  # timed out or evicted meanwhile
                if isinstance(result, _Deferred) and result.cancel is not None:
                    result.cancel()
                continue
            if isinstance(result, _Deferred):
                self._defer(conn, result)
            else:
                self._guarded(self._start_write, conn, result)

    # ---- connections -----------------------------------------------------------
    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                sock, addr = self._listener.accept()
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
            web = self._web.current() if self._web is not None else None
            state = "read"
            if web is not None and web.context is not None:
                try:
                    sock = web.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
                except (ssl.SSLError, OSError):
                    REFUSED.labels("tls_handshake").inc()
                    sock.close()
                    continue
                state = "handshake"
            conn = _Conn(sock, is_loopback_peer(addr[0]), web, time.monotonic() + REQUEST_TIMEOUT, state)
            self._conns[conn.fd] = conn
            self._watch(conn, _READ)

    def _watch(self, conn: _Conn, events: int) -> None:
        if events == conn.events:
            return
        if not events:
            self._sel.unregister(conn.sock)
        elif not conn.events:
            self._sel.register(conn.sock, events, None)
        else:
            self._sel.modify(conn.sock, events, None)
        conn.events = events

    def _evict_one(self) -> bool:
        for conn in self._conns.values():  # oldest first
            if conn.state in ("handshake", "read"):
                CONNECTIONS_CLOSED.labels("limit").inc()
                self._close(conn)
                return True
        return False

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._conns.values() if c.deadline <= now]:
            CONNECTIONS_CLOSED.labels("timeout").inc()
            self._close(conn)

    def _close(self, conn: _Conn) -> None:
        if self._conns.get(conn.fd) is conn:
            del self._conns[conn.fd]
        if conn.events:
            try:
                self._sel.unregister(conn.sock)
            except (KeyError, ValueError):
                pass
            conn.events = 0
        conn.sock.close()

    def _on_ready(self, conn: _Conn) -> None:
        if conn.state == "handshake":
            self._handshake(conn)
        elif conn.state == "read":
            self._read(conn)
        elif conn.state == "write":
            self._write(conn)

    def _handshake(self, conn: _Conn) -> None:
        try:
            conn.sock.do_handshake()
        except ssl.SSLWantReadError:
            self._watch(conn, _READ)
            return
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)
            return
        except (ssl.SSLError, OSError) as e:
            REFUSED.labels("tls_handshake").inc()
            log.debug("metrics: TLS handshake failed: %s", e)
            self._close(conn)
            return
        conn.state = "read"
        self._watch(conn, _READ)
        self._read(conn)  # the request may have come with the handshake's last flight

    def _recv(self, conn: _Conn) -> bytes | None:
        """What can be read now (b"" at EOF), None if nothing yet."""
        sock = conn.sock
        try:
            data = sock.recv(MAX_REQUEST_BYTES)
            # TLS: a record already decrypted is not signalled by the selector again
            while data and isinstance(sock, ssl.SSLSocket) and sock.pending() and len(data) <= MAX_REQUEST_BYTES:
                data += sock.recv(MAX_REQUEST_BYTES)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            self._watch(conn, _READ)
            return None
        except ssl.SSLWantWriteError:
            self._watch(conn, _WRITE)
            return None
        except OSError:  # SSLError too: a broken or closed TLS stream
            return b""
        return data

    def _read(self, conn: _Conn) -> None:
        data = self._recv(conn)
        if data is None:
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
        result = self._handle(conn, bytes(conn.inbuf[:end]))
        conn.inbuf = bytearray()
        if result is None:
            CONNECTIONS_CLOSED.labels("bad_request").inc()
            self._close(conn)
        elif isinstance(result, _Deferred):
            self._defer(conn, result)
        else:
            self._start_write(conn, result)

    def _start_write(self, conn: _Conn, data: bytes) -> None:
        conn.out = memoryview(data)
        conn.state = "write"
        conn.deadline = time.monotonic() + WRITE_TIMEOUT
        self._watch(conn, _WRITE)
        self._write(conn)

    def _write(self, conn: _Conn) -> None:
        try:
            # the same slice again after a want-write: OpenSSL retries with what it was given
            n = conn.sock.send(conn.out[:SEND_CHUNK])
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError):
            self._watch(conn, _WRITE)
            return
        except ssl.SSLWantReadError:
            self._watch(conn, _READ)
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[n:]
        if not len(conn.out):
            if isinstance(conn.sock, ssl.SSLSocket):
                try:
                    conn.sock.unwrap()  # sends close_notify; the peer's answer is not waited for
                except (OSError, ValueError):
                    pass
            self._close(conn)

    # ---- requests ----------------------------------------------------------------
    def _parse(self, head: bytes) -> tuple[dict, str] | None:
        """(WSGI environ, method) of a request head, or None if it is not HTTP."""
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
        environ = {"REQUEST_METHOD": "GET" if method == "HEAD" else method, "PATH_INFO": unquote(path),
                   "QUERY_STRING": query, "SERVER_NAME": self._host, "SERVER_PORT": str(self.port),
                   "SERVER_PROTOCOL": "HTTP/1.1", "wsgi.url_scheme": "http"}
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep:
                return None
            key = "HTTP_" + name.strip().decode("latin-1").upper().replace("-", "_")
            environ[key] = value.strip().decode("latin-1")
        return environ, method

    def _handle(self, conn: _Conn, head: bytes) -> bytes | _Deferred | None:
        """The response to one request head: bytes now, work for a worker, or None if not HTTP."""
        parsed = self._parse(head)
        if parsed is None:
            return None
        environ, method = parsed
        web, path = conn.web, environ["PATH_INFO"]
        if web is not None and web.context is not None:
            environ["wsgi.url_scheme"] = "https"
        guarded = web is not None and (web.auth or (web.tls is not None and web.tls.client_auth != "NoClientCert"))
        if path in HEALTH_PATHS:
            # open, so that probes need no credentials; details only to this host or an authenticated listener
            environ["xtcp2.health_detail"] = conn.loopback or not guarded
            return self._call(environ, method, web)
        if path == PROFILE_PATH and not conn.loopback:
            REFUSED.labels("not_loopback").inc()
            PROFILES.labels("refused").inc()
            return _text("403 Forbidden", "/debug/profile answers loopback clients only", method, web=web)
        if web is not None and web.tls is not None and not client_identity_ok(web.tls, conn.sock.getpeercert()):
            REFUSED.labels("client_cert").inc()
            return _text("403 Forbidden", "a client certificate signed by the configured CA (with an allowed SAN) "
                         "is required", method, web=web)
        if web is not None and web.auth:
            creds = BasicAuth.credentials(environ.get("HTTP_AUTHORIZATION"))
            if creds is None:
                return self._unauthorized(method, web)
            if not self._auth.cached(web.users, creds):
                if not self._auth_slots.acquire(blocking=False):
                    REFUSED.labels("auth_busy").inc()
                    return _text("503 Service Unavailable", "too many logins at once; retry", method,
                                 [("Retry-After", "1")], web)

                def check() -> bytes | _Deferred:
                    try:
                        ok = self._auth.check(web.users, creds)
                    finally:
                        self._auth_slots.release()
                    return self._dispatch(environ, method, web) if ok else self._unauthorized(method, web)
                wait = AUTH_TIMEOUT + (MAX_PROFILE_SECONDS + 35 if path == PROFILE_PATH else 0)
                return _Deferred(check, wait, self._auth_pool)
        return self._dispatch(environ, method, web)

    @staticmethod
    def _unauthorized(method: str, web) -> bytes:
        REFUSED.labels("unauthorized").inc()
        return _text("401 Unauthorized", "Unauthorized", method, [("WWW-Authenticate", 'Basic realm="xtcp2"')], web)

    def _dispatch(self, environ: dict, method: str, web) -> bytes | _Deferred:
        """After authentication: the profile or the WSGI app."""
        if environ["PATH_INFO"] == PROFILE_PATH:
            return self._profile(environ["QUERY_STRING"], method, web)
        return self._call(environ, method, web)

    def _profile(self, query: str, method: str, web) -> bytes | _Deferred:
        if method != "GET":
            return _text("405 Method Not Allowed", "GET only", method, [("Allow", "GET")], web)
        try:
            seconds, fmt, idle = parse_profile_query(query)
        except ProfileError as e:
            PROFILES.labels(e.result).inc()
            return _text(e.status, str(e), method, web=web)
        if not self._profiler.claim():
            PROFILES.labels("busy").inc()
            return _text("429 Too Many Requests", "a profile is already running; one at a time", method,
                         [("Retry-After", str(seconds))], web)

        def run() -> bytes:
            try:
                body, ctype = self._profiler.run(seconds, fmt, idle)
            except ProfileError as e:
                PROFILES.labels(e.result).inc()
                return _text(e.status, str(e), method, web=web)
            PROFILES.labels("ok").inc()
            return response("200 OK", body, [("Content-Type", ctype), ("Cache-Control", "no-store")], method,
                            web.headers if web else ())
        return _Deferred(run, seconds + 35, self._profile_pool, cancel=self._profiler.release)

    def _call(self, environ: dict, method: str, web) -> bytes:
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
        return response(status, body, headers, method, web.headers if web else ())


@dataclass
class MetricsServer:
    host: str
    port: int
    path: str
    _httpd: _SelectorServer
    _thread: threading.Thread
    tls: bool = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}{self.path}"

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
    (xtcp2.api.health.Health) /healthz and /readyz answer too. config.web_config_file
    adds TLS and basic auth; a file that does not load is an Xtcp2Error (one line)."""
    host, port = parse_listen(config.prom_listen)
    path = config.prom_path if config.prom_path.startswith("/") else "/" + config.prom_path
    web = WebConfigSource(config.web_config_file) if config.web_config_file else None
    register_process_metrics(registry)
    import_metric_modules()
    register_upstream_metrics(registry)
    app = make_wsgi_app(registry)

    def routed(environ, start_response):
        if health is not None and environ.get("PATH_INFO", "") in HEALTH_PATHS:
            return health.wsgi(environ["PATH_INFO"], start_response, environ.get("xtcp2.health_detail", True))
        if environ.get("PATH_INFO", "") != path:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"metrics are at {path}\n".encode()]
        return app(environ, start_response)

    try:
        sock = _listen(host, port)
    except OSError as e:
        raise Xtcp2Error(f"metrics: cannot listen on {config.prom_listen}: {e.strerror or e}") from None
    httpd = _SelectorServer(sock, routed, host, web)
    thread = threading.Thread(target=httpd.serve_forever, name="xtcp2-metrics", daemon=True)
    thread.start()
    tls = web is not None and web.config.tls is not None
    handle = MetricsServer(host, httpd.port, path, httpd, thread, tls)
    extra = []
    if tls:
        extra.append(f"client certificates {web.config.tls.client_auth}")
    if web is not None and web.config.auth:
        extra.append(f"basic auth, {len(web.config.users)} user(s)")
    log.info("Prometheus metrics at %s%s", handle.url, f" ({'; '.join(extra)})" if extra else "")
    return handle
