"""Liveness and readiness, for /healthz, /readyz, `xtcp2 -healthcheck` and systemd.

live:  the collection loop beat within the liveness timeout (xtcp2/heartbeat.py).
ready: live, collection has started (the first poll is done, or the BPF programs are
       attached and their loop runs), and the destination is connected (a network
       destination that cannot reach its server is not ready; its records queue).

systemd (Type=notify): READY=1 once collection has started (not waiting for the
destination: a Kafka outage at boot must not fail the unit, the queue covers it), then
WATCHDOG=1 every WatchdogSec/2 while live. A stuck loop stops the pings and systemd
restarts the service.
"""
from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

from .. import values
from ..errors import ConfigError

log = logging.getLogger(__name__)

MIN_LIVENESS_TIMEOUT = 60.0


def liveness_timeout(config) -> float:
    """-livenessTimeout, or (0 = auto) the larger of 60 s and 3 x -frequency: poll mode
    beats once per poll, and one slow poll must not count as stuck."""
    if config.liveness_timeout:
        return config.liveness_timeout
    return max(MIN_LIVENESS_TIMEOUT, 3 * config.poll_frequency)


@dataclass
class Status:
    ok: bool
    detail: str


class Health:
    """Reads the daemon's heartbeat, mode and destination; holds no state of its own."""

    def __init__(self, daemon, timeout: float) -> None:
        self.daemon = daemon
        self.timeout = timeout

    def live(self) -> Status:
        beat = self.daemon._stop   # the Daemon's HeartbeatEvent, which its run loop checks
        age = beat.age()
        if age is None:
            return Status(True, "starting: the collection loop has not run yet")
        if age > self.timeout:
            return Status(False, f"stuck: the collection loop last ran {age:.1f}s ago (limit {self.timeout:g}s)")
        return Status(True, f"ok: the collection loop ran {age:.1f}s ago")

    def started(self) -> Status:
        d = self.daemon
        if getattr(d, "loops", 0) > 0:
            return Status(True, f"{d.loops} poll(s) done")
        bpf = getattr(d, "bpf", None) is not None or getattr(getattr(d, "mode", None), "name", "") == "bpf"
        if bpf and d._stop.beats > 0:
            return Status(True, "bpf programs attached, event loop running")
        return Status(False, "collection has not started (first poll or bpf attach pending)")

    def destination(self) -> Status:
        dest = getattr(self.daemon.emitter, "dest", None)
        if dest is None:
            return Status(False, "no destination open")
        if getattr(dest, "connected", True):
            return Status(True, f"destination {self.daemon.config.dest.split('?')[0]} connected")
        return Status(False, f"destination {self.daemon.config.dest.split('?')[0]} not connected")

    def ready(self) -> Status:
        for check in (self.live(), self.started(), self.destination()):
            if not check.ok:
                return Status(False, check.detail)
        return Status(True, "ready")

    # ---- HTTP ----------------------------------------------------------------------------
    def wsgi(self, path: str, start_response, detail: bool = True) -> list[bytes]:
        """detail=False: only ok / failing (the listener's choice for unauthenticated remote
        callers: the details name the destination)."""
        status = self.live() if path == "/healthz" else self.ready()
        start_response("200 OK" if status.ok else "503 Service Unavailable",
                       [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")])
        text = status.detail if detail else ("ok" if status.ok else "failing")
        return [text.encode() + b"\n"]


HEALTH_PATHS = ("/healthz", "/readyz")


# ---- xtcp2 -healthcheck --------------------------------------------------------------------
def parse_listen(value: str) -> tuple[str, int]:
    """-promListen -> (host, port); ConfigError naming the flag."""
    try:
        return values.listen_address(value)
    except ValueError as e:
        raise ConfigError("prom_listen", str(e)) from None


def probe_base(prom_listen: str, tls: bool = False) -> str:
    """The URL base that reaches a listener bound to prom_listen from this host."""
    host, port = parse_listen(prom_listen)
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    scheme = "https" if tls else "http"
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


def probe_context(cert_file: str) -> ssl.SSLContext:
    """TLS for the local probe: the daemon must present the very certificate its web
    config names (pinned: trusted as an anchor itself), whatever names it carries."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False   # 127.0.0.1 need not be among its names; the pin is the check
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    ctx.load_verify_locations(cafile=cert_file)
    return ctx


def healthcheck(prom_listen: str, timeout: float = 3.0, web_config_file: str = "") -> tuple[bool, str]:
    """GET /healthz and /readyz: (both 200, one line naming each answer). With a web
    config (-webConfigFile) the probe speaks TLS when the listener does; the health
    paths need no password or client certificate."""
    if not prom_listen:
        return False, "healthcheck: -promListen is empty, so there is no health endpoint"
    context = None
    if web_config_file:
        from ..errors import Xtcp2Error
        from .web_config import parse
        try:
            web = parse(web_config_file)
            if web.tls is not None:
                context = probe_context(web.tls.cert_file)
        except (Xtcp2Error, ssl.SSLError, OSError) as e:
            return False, f"healthcheck: {e}"
    base = probe_base(prom_listen, tls=context is not None)
    parts, ok = [], True
    for path in HEALTH_PATHS:
        try:
            with urllib.request.urlopen(base + path, timeout=timeout, context=context) as r:
                parts.append(f"{path} {r.status} {r.read(200).decode(errors='replace').strip()}")
        except urllib.error.HTTPError as e:
            ok = False
            parts.append(f"{path} {e.code} {e.read(200).decode(errors='replace').strip()}")
        except OSError as e:
            ok = False
            parts.append(f"{path} unreachable at {base}: {getattr(e, 'reason', e)}")
    return ok, "; ".join(parts)


# ---- systemd sd_notify ---------------------------------------------------------------------
def sd_notify(message: str, environ=os.environ) -> bool:
    """Send one datagram to $NOTIFY_SOCKET (a path, or @name for the abstract namespace)."""
    addr = environ.get("NOTIFY_SOCKET", "")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        try:
            s.connect(addr)
            s.sendall(message.encode())
        except OSError as e:
            log.warning("sd_notify to %s failed: %s", environ.get("NOTIFY_SOCKET"), e)
            return False
    return True


def watchdog_interval(environ=os.environ) -> float | None:
    """Half of $WATCHDOG_USEC when the watchdog is meant for this process, else None."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2e6


class SystemdNotifier:
    """READY=1 once collection started, WATCHDOG=1 while live, STOPPING=1 at the end."""

    def __init__(self, health: Health, environ=os.environ) -> None:
        self.health = health
        self.environ = dict(environ)
        self.interval = watchdog_interval(environ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="xtcp2-sd-notify", daemon=True)

    @property
    def enabled(self) -> bool:
        return bool(self.environ.get("NOTIFY_SOCKET"))

    def start(self) -> None:
        if self.enabled:
            self._thread.start()

    def _run(self) -> None:
        ready = False
        next_ping = time.monotonic()
        while not self._stop.is_set():
            if not ready and self.health.started().ok:
                ready = sd_notify(f"READY=1\nSTATUS={self.health.started().detail}", self.environ)
            now = time.monotonic()
            if self.interval and now >= next_ping:
                live = self.health.live()
                if live.ok:
                    sd_notify("WATCHDOG=1", self.environ)
                else:  # no ping: systemd restarts us after WatchdogSec
                    log.error("systemd watchdog: not pinging, %s", live.detail)
                    sd_notify(f"STATUS={live.detail}", self.environ)
                next_ping = now + self.interval
            self._stop.wait(0.2 if not ready else min(self.interval or 1.0, 1.0))

    def stop(self) -> None:
        if self.enabled:
            self._stop.set()
            if self._thread.is_alive():
                self._thread.join(timeout=2)
            sd_notify("STOPPING=1", self.environ)
