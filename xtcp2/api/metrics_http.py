"""HTTP endpoint serving the Prometheus text format on config.prom_listen + config.prom_path.

prometheus_client's own start_http_server answers on every path; this one answers
only on prom_path (404 elsewhere, so a typo in a scrape config is visible) and reports
a bind failure as a one-line error.
"""
from __future__ import annotations

import importlib
import logging
import socket
import threading
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

from ..config import Config
from ..errors import ConfigError, Xtcp2Error
from .process_metrics import register_process_metrics

log = logging.getLogger(__name__)

# Modules that define metrics at import. Importing them up front makes every series
# exist (at zero) from the first scrape in every mode, so dashboards and alerts never
# see a metric appear late or not at all.
METRIC_MODULES = (
    "xtcp2.metrics", "xtcp2.api.record_fanout", "xtcp2.api.config_service", "xtcp2.api.flat_record_service",
    "xtcp2.netlink.destroy", "xtcp2.ebpf.collector",
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


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _V6Server(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # scrapes every few seconds would flood the log
        pass


@dataclass
class MetricsServer:
    host: str
    port: int
    path: str
    _httpd: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.path}"

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


def start_metrics_server(config: Config, registry=REGISTRY) -> MetricsServer:
    """Serve metrics until .stop(). Port 0 picks a free port (see .port)."""
    host, port = parse_listen(config.prom_listen)
    path = config.prom_path if config.prom_path.startswith("/") else "/" + config.prom_path
    register_process_metrics(registry)
    import_metric_modules()
    app = make_wsgi_app(registry)

    def routed(environ, start_response):
        if environ.get("PATH_INFO", "") != path:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [f"metrics are at {path}\n".encode()]
        return app(environ, start_response)

    server_class = _V6Server if ":" in host else _Server
    try:
        httpd = make_server(host, port, routed, server_class=server_class, handler_class=_QuietHandler)
    except OSError as e:
        raise Xtcp2Error(f"metrics: cannot listen on {config.prom_listen}: {e.strerror or e}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="xtcp2-metrics", daemon=True)
    thread.start()
    handle = MetricsServer(host, httpd.server_address[1], path, httpd, thread)
    log.info("Prometheus metrics at %s", handle.url)
    return handle
