"""The two calls the daemon's command line needs: preflight() before building the
Daemon, start_control_plane() once it exists.

    report = preflight(cfg)                   # CapabilityError (exit 2) if a hard need is missing
    daemon = Daemon(cfg)
    plane = start_control_plane(daemon, cfg)  # metrics + gRPC; Xtcp2Error if a port is taken
    try: daemon.run()
    finally: plane.stop(); daemon.close()
"""
from __future__ import annotations

import logging

from ..config import Config
from .capabilities import CapabilityReport, require

log = logging.getLogger(__name__)


def preflight(config: Config) -> CapabilityReport:
    """Capability check for config.mode; warnings are logged, a missing hard need raises."""
    report = require(config.mode, own_netns_only=bool(config.netns) and set(config.netns) <= {"self", "default"})
    for w in report.warnings:
        log.warning("%s", w)
    return report


class ControlPlane:
    def __init__(self) -> None:
        self.grpc: object | None = None
        self.metrics: object | None = None
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for part in (self.grpc, self.metrics):
            if part is not None:
                try:
                    part.stop()
                except Exception as e:  # shutdown must go on
                    log.warning("control plane shutdown: %s", e)


def start_control_plane(daemon, config: Config, *, grpc: bool = True, metrics: bool = True) -> ControlPlane:
    """Start the metrics endpoint (unless prom_listen is empty) and the gRPC API.

    All or nothing: if the second listener fails the first is stopped again before the
    Xtcp2Error propagates.
    """
    from .grpc_server import start_grpc_server
    from .metrics_http import start_metrics_server

    plane = ControlPlane()
    try:
        if metrics and config.prom_listen:
            from .health import Health, liveness_timeout
            plane.metrics = start_metrics_server(config, health=Health(daemon, liveness_timeout(config)))
        if grpc:
            plane.grpc = start_grpc_server(daemon, config)
    except BaseException:
        plane.stop()
        raise
    return plane
