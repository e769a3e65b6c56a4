"""The control plane of the real `xtcp2` process: gRPC and metrics come up with the
daemon's flags, answer, and go away cleanly on SIGTERM."""
from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from .test_capabilities import ROOT

pytestmark = pytest.mark.root


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_daemon_serves_grpc_and_metrics_then_stops(socket_netns, run_upstream):
    gport, mport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "xtcp2", "--mode", "poll", "-netns", socket_netns["name"], "-dest", "null",
                             "-frequency", "0.5s", "-timeout", "0.4s", "-grpcPort", str(gport),
                             "-promListen", f"127.0.0.1:{mport}", "-promPath", "/m"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        body = ""
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                body = urllib.request.urlopen(f"http://127.0.0.1:{mport}/m", timeout=2).read().decode()
                if re.search(r"^xtcp2_polls_total [1-9]", body, re.M):
                    break
            except OSError:
                pass
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read()
        assert "xtcp2_process_open_fds" in body
        res = run_upstream(f"127.0.0.1:{gport}", [["unary", "Get", {}],
                                                  ["stream", {"count": 10, "timeout": 10}]])
        assert res[0]["ok"] and res[0]["response"]["config"]["grpc_port"] == gport
        assert res[1]["ok"] and len(res[1]["records"]) == 10
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
        for port in (gport, mport):
            with pytest.raises(OSError):
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
