"""start_control_plane / preflight as the daemon's command line uses them."""
from __future__ import annotations

import socket
import urllib.request

import grpc
import psutil
import pytest

from xtcp2.api.control_plane import preflight, start_control_plane
from xtcp2.config import Config
from xtcp2.errors import Xtcp2Error

pytestmark = pytest.mark.root


def test_both_listeners_start_and_stop(start_daemon):
    rd = start_daemon()
    cfg = rd.daemon.config.replace(prom_listen="127.0.0.1:0")
    plane = start_control_plane(rd.daemon, cfg)
    try:
        assert b"xtcp2_polls_total" in urllib.request.urlopen(plane.metrics.url, timeout=5).read()
        with grpc.insecure_channel(f"127.0.0.1:{plane.grpc.port}") as ch:
            grpc.channel_ready_future(ch).result(timeout=5)
    finally:
        plane.stop()
        plane.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", plane.metrics.port), timeout=1).close()


def test_all_or_nothing_when_grpc_port_is_taken(start_daemon):
    rd = start_daemon()
    taken = rd.server.port
    cfg = rd.daemon.config.replace(prom_listen="127.0.0.1:0", grpc_port=taken)
    before = listening()
    with pytest.raises(Xtcp2Error, match="gRPC: cannot listen"):
        start_control_plane(rd.daemon, cfg)
    # the metrics listener started first was closed again
    assert listening() == before


def listening() -> set:
    return {c.laddr for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN}


def test_empty_prom_listen_disables_metrics(start_daemon):
    rd = start_daemon()
    plane = start_control_plane(rd.daemon, rd.daemon.config.replace(prom_listen=""), grpc=False)
    assert plane.metrics is None and plane.grpc is None
    plane.stop()


def test_preflight_passes_with_full_privileges():
    assert preflight(Config(mode="poll")).ok
